"""Sliding-window language-model layers: captured rows sit on absolute key positions.

A Qwen2-VL checkpoint with ``use_sliding_window`` and ``max_window_layers = 1`` runs layer 0 with
full attention and layer 1 (``layer_types``) with a window of ``W`` keys (query at position ``p`` sees keys
``p-W+1 … p``). During generation the sliding layer's cache holds only the last keys, so its decode
calls see ``W`` keys, not ``N + t``.

Reference: one eager forward pass without a cache over the prompt plus the generated tokens, with
``output_attentions=True``: its ``[H, N+T, N+T]`` matrices are indexed by absolute key position, so
decode row ``t`` is its row ``N + t - 1`` (keys ``0 … N+t-1``) and prefill row ``r`` its row ``r``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText

from vlmattn.engine.inference import capture_attention, load_model

STEPS = 5
QUESTION = "What shape is in the image?"


def scene():
    im = Image.new("RGB", (224, 224), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([30, 40, 120, 130], fill=(40, 180, 60))
    return im


def prompt_length(path) -> int:
    from vlmattn.engine.adapters import get_adapter
    from vlmattn.engine.processors import load_processor

    return get_adapter("qwen2_vl").build_inputs(load_processor(str(path)), scene(), QUESTION)["input_ids"].shape[1]


@pytest.fixture(scope="module")
def sliding_checkpoint(checkpoint, tmp_path_factory):
    """``sliding_checkpoint(window)`` → the tiny Qwen2-VL checkpoint with that window in layers ≥ 1."""

    def get(window: int):
        path = tmp_path_factory.mktemp("qwen2_vl_sliding") / "model"
        shutil.copytree(checkpoint("qwen2_vl"), path)
        cfg = json.loads((path / "config.json").read_text())
        text = cfg["text_config"]
        text.update(use_sliding_window=True, sliding_window=window, max_window_layers=1)
        text.pop("layer_types")  # derived again from max_window_layers
        (path / "config.json").write_text(json.dumps(cfg))
        return path

    return get


@torch.no_grad()
@pytest.mark.parametrize("where", ["inside_prompt", "during_decoding"])
def test_sliding_layer_rows_on_absolute_keys(checkpoint, sliding_checkpoint, where):
    """``inside_prompt``: the window (24 keys) is shorter than the prompt; ``during_decoding``: the
    prompt fits in the window and the decode steps outgrow it."""
    n = prompt_length(checkpoint("qwen2_vl"))
    window = 24 if where == "inside_prompt" else n + 2
    assert window < n if where == "inside_prompt" else window < n + STEPS - 1
    path = sliding_checkpoint(window)
    lm = load_model("sliding", "qwen2_vl", str(path))
    lm.model.generation_config.min_new_tokens = STEPS
    assert lm.model.config.get_text_config().layer_types == ["full_attention", "sliding_attention"]
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all", vision_encoder=False)
    assert len(s.input_ids) == n and s.n_steps == STEPS
    assert s.decode_key_len.tolist() == list(range(n, n + STEPS))

    eager = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
    inputs = lm.adapter.build_inputs(lm.processor, scene(), QUESTION)
    gen = torch.as_tensor(s.generated_ids)[None]
    ids = torch.cat([inputs["input_ids"], gen], dim=1)
    types = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(gen)], dim=1)  # generated tokens are text
    full = eager(
        input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types,
        pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
        output_attentions=True, use_cache=False,
    ).attentions
    ref = eager.generate(**inputs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
    assert s.generated_ids.tolist() == ref[0, n:].tolist()
    for layer in range(2):
        a = full[layer][0].numpy()  # [H, N+T, N+T], absolute key positions
        np.testing.assert_allclose(s.prefill[layer], a[:, :n, :n], atol=1e-5, rtol=0)
        for t in range(STEPS):
            got, want = s.decode[t, layer, :, : n + t], a[:, n + t - 1, : n + t]
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"layer {layer} step {t}")
            assert not s.decode[t, layer, :, n + t :].any()
            if layer == 1:  # keys before the window carry no weight
                assert not s.decode[t, layer, :, : max(n + t - window, 0)].any()
                np.testing.assert_allclose(s.decode[t, layer].sum(-1), 1.0, atol=1e-5)


def test_attention_rows_window_without_mask():
    """With no mask, row ``r`` of a windowed layer sees keys ``r-W+1 … r`` (bottom-right aligned)."""
    from vlmattn.engine.capture import attention_rows

    torch.manual_seed(0)
    q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 9, 8)  # 6 queries on the last 6 of 9 keys
    rows = torch.tensor([0, 3, 5])
    got = attention_rows(q, k, None, 0.5, rows, 2, window=3)
    scores = torch.einsum("hqd,hkd->hqk", q[0], k[0].repeat_interleave(2, 0)) * 0.5
    pos, key = torch.arange(6)[:, None] + 3, torch.arange(9)[None, :]
    scores = scores.masked_fill(~((key <= pos) & (key > pos - 3)), float("-inf"))
    torch.testing.assert_close(got, torch.softmax(scores, -1)[:, rows], atol=1e-6, rtol=0)
