"""The ``attribution`` config block: schema defaults, the options the jobs get, and its cross-checks."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests import REPO
from vlmattn.attribution.options import attribute_options, attribution_samples, plot_options, table_options
from vlmattn.config import samples
from vlmattn.errors import ConfigError
from vlmattn.families import ONLINE_PRUNING
from vlmattn.workflow import load_config

BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def config(block):
    c = copy.deepcopy(BASE)
    c["attribution"] = block
    return c


def test_defaults_options_and_samples():
    cfg = load_config(config({"models": ["toy_llava"]}))
    o = attribute_options(cfg)
    assert o["maps"] == {"attention_layers": None, "ig_steps": 32, "ig_baseline": "blank", "pixel_steps": 256,
                         "ig_batch": 32, "tokens_per_sample": 16}
    assert o["fractions"] == [0.0625, 0.125, 0.25, 0.5, 0.75] and o["folds"] == 5 and plot_options(cfg)["overlays"] == 4
    assert table_options(cfg) == {"statistics": {"n_resamples": 999, "confidence": 0.95}, "seed": o["seed"]}
    every = attribution_samples(cfg, samples(cfg))
    assert {s.model for s in every} == {"toy_llava"} and len(every) == len(samples(cfg)) // 2
    shipped = load_config(copy.deepcopy(BASE))
    chosen = attribution_samples(shipped, samples(shipped))
    assert {s.question for s in chosen} == {"shape", "colour", "count"} and len(chosen) == 8


@pytest.mark.parametrize("block, message", [
    ({"models": ["nope"]}, "attribution.models: unknown model 'nope'"),
    ({"models": ["toy_llava"], "questions": ["nope"]}, "attribution.questions: unknown question 'nope'"),
    ({"models": ["toy_llava"], "integrated_gradients": {"baseline": "noise"}}, "baseline"),
    ({"models": ["toy_llava"], "faithfulness": {"fractions": [1.0]}}, "fractions"),
])
def test_bad_blocks_fail_with_one_line(block, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(config(block))
    assert "\n" not in str(e.value)


def test_other_families_are_refused():
    c = config({"models": ["toy_qwen"]})
    c["models"]["toy_qwen"] = {"family": "qwen2_vl", "build": {"kind": "random", "spec": {"seed": 0}}}
    with pytest.raises(ConfigError, match="family 'qwen2_vl'.*runs the families " + ", ".join(ONLINE_PRUNING) + "$"):
        load_config(c)
