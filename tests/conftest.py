"""Shared fixtures: tiny offline LLaVA checkpoints (MHA and GQA) built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlmattn.models.toy import ToySpec, build_toy, save

REPO = Path(__file__).resolve().parents[1]
TINY = dict(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2,
            text_hidden=64, text_layers=2, vocab_size=400)

torch.set_num_threads(2)


def build_checkpoint(path: Path, **spec) -> Path:
    model, processor = build_toy(ToySpec(**{**TINY, **spec}))
    save(model, processor, path)
    return path


@pytest.fixture(scope="session")
def gqa_checkpoint(tmp_path_factory) -> Path:
    """4 query heads sharing 2 KV heads."""
    return build_checkpoint(tmp_path_factory.mktemp("gqa") / "model", text_heads=4, text_kv_heads=2)


@pytest.fixture(scope="session")
def mha_checkpoint(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("mha") / "model", text_heads=4, text_kv_heads=4, seed=1)
