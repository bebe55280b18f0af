"""Conda environments per stage: they parse, pin the versions of envs/requirements.txt, keep torch out
of the analysis stages, and every rule points at the right one. (Conda channels cannot be reached
here, so the environments themselves are not built.)"""

from __future__ import annotations

import re

import pytest
import yaml

from tests import REPO

ENVS = {"ENV_MODELS": "envs/extraction.yaml", "ENV_ANALYSIS": "envs/analysis.yaml"}
CONDA_TO_PIP = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
MODEL_RULES = {"extract", "build_model", "train_model", "contrast_causal", "pruning_online", "train_pruner",
               "pruning_learned", "attribute"}


def requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "envs/requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def conda_pins(path: str) -> dict[str, str]:
    env = yaml.safe_load((REPO / path).read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and "=" in dep:
            name, version = dep.split("=")[:2]
            pins[CONDA_TO_PIP.get(name, name).lower()] = version
    return pins


@pytest.mark.parametrize("path", ENVS.values())
def test_env_pins_match_requirements(path):
    pins, reqs = conda_pins(path), requirements()
    assert pins.pop("python") == "3.11"
    assert pins, path
    for name, version in pins.items():
        assert reqs.get(name) == version, f"{path}: {name}={version}, requirements.txt {reqs.get(name)}"


def test_analysis_env_has_no_torch():
    pins = conda_pins(ENVS["ENV_ANALYSIS"])
    assert not {"torch", "transformers", "tokenizers"} & set(pins)
    pip = next(d["pip"] for d in yaml.safe_load((REPO / ENVS["ENV_ANALYSIS"]).read_text())["dependencies"]
               if isinstance(d, dict))
    assert pip == ["-e .."]
    assert "torch" in conda_pins(ENVS["ENV_MODELS"])


def test_every_rule_names_its_stage_env():
    """Rule name (literal or f-string template) -> the env variable of its ``conda:`` directive."""
    found = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"(?m)^\s*rule\b", text)[1:]:
            name = re.match(r"\s*(\w+):", block)
            name = name.group(1) if name else None
            templated = re.search(r'name:\s*\n\s*f"(\w+)_\{', block)
            key = templated.group(1) + "_*" if templated else name
            env = re.search(r"conda:\s*\n\s*(\w+)", block)
            assert env, f"{smk.name}: rule {key} has no conda directive"
            found[key] = env.group(1)
    assert set(found.values()) <= set(ENVS)
    for rule, env in found.items():
        assert env == ("ENV_MODELS" if rule in MODEL_RULES else "ENV_ANALYSIS"), (rule, env)
    assert set(found) >= MODEL_RULES and {"metric_*", "summary_*", "plot_*", "answers"} <= set(found), found
