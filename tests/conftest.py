"""Shared fixtures: tiny random-weight checkpoints of every family, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmattn.models import replicas, tiled, toy

FAMILIES = ("llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", *tiled.FAMILIES)

# hidden ≤ 64, 2 layers, GQA in the language model (4 query heads over 2 KV heads)
LLAVA_SPEC = toy.ToySpec(
    image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2,
    text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=2,
)
REPLICA_SPEC = replicas.ReplicaSpec()
TILED_SPEC = tiled.TiledSpec()


def build(family: str):
    if family == "llava":
        return toy.build_toy(LLAVA_SPEC)
    if family in tiled.FAMILIES:
        return tiled.build_tiled(family, TILED_SPEC)
    return replicas.build_replica(family, REPLICA_SPEC)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """``checkpoint(family)`` → path of a saved tiny checkpoint of that family (built on first use)."""
    paths = {}

    def get(family: str):
        if family not in paths:
            out = tmp_path_factory.mktemp(family)
            model, processor = build(family)
            toy.save(model, processor, out)
            paths[family] = out
        return paths[family]

    return get


@pytest.fixture(scope="session")
def loaded(checkpoint):
    """``loaded(family)`` → a :class:`vlmattn.engine.inference.LoadedModel` of that family (float32, CPU)."""
    from vlmattn.engine.inference import load_model

    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load_model(f"tiny_{family}", family, str(checkpoint(family)))
        return cache[family]

    return get


# Plain LLaVA checkpoints with and without grouped-query attention (capture, store and config tests).
TINY = dict(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2,
            text_hidden=64, text_layers=2, vocab_size=400)


def build_checkpoint(path: Path, **spec) -> Path:
    model, processor = toy.build_toy(toy.ToySpec(**{**TINY, **spec}))
    toy.save(model, processor, path)
    return path


@pytest.fixture(scope="session")
def gqa_checkpoint(tmp_path_factory) -> Path:
    """4 query heads sharing 2 KV heads."""
    return build_checkpoint(tmp_path_factory.mktemp("gqa") / "model", text_heads=4, text_kv_heads=2)


@pytest.fixture(scope="session")
def mha_checkpoint(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("mha") / "model", text_heads=4, text_kv_heads=4, seed=1)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """The default configuration, exactly as shipped, run end to end once per test session (its
    working directory)."""
    import shutil

    from tests import REPO
    from tests.pipeline import snakemake

    wd = tmp_path_factory.mktemp("default")
    shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    snakemake(wd, "--cores", "2")
    return wd
