"""Captured rows equal eager ``output_attentions=True`` rows (float32, ≤ 1e-5) for every family and
prefill mode, and capture leaves generation token-identical to plain SDPA.

Reference: the same checkpoint loaded with ``attn_implementation="eager"``, generating with
``return_dict_in_generate=True, output_attentions=True``. Step 0's row is the last prefill row,
step ``t``'s row is ``attentions[t][layer][0, :, 0]``; prefill rows are ``attentions[0][layer][0, :, r]``.
Qwen's language models use 3-D (mrope) positions; the capture sees q/k after rope, so the same
comparison covers them.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText

from vlmattn.engine.inference import PREFILL_MODES, capture_attention, prefill_positions

from .conftest import FAMILIES

STEPS = 4
QUESTION = "What shape is in the image?"


def scene():
    im = Image.new("RGB", (150, 90), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([20, 10, 70, 60], fill=(40, 180, 60))
    return im


@pytest.fixture(scope="module")
def reference(checkpoint, loaded):
    """``reference(family)`` → (inputs, eager generate output, sdpa token ids)."""
    cache = {}

    @torch.no_grad()
    def get(family):
        if family not in cache:
            lm = loaded(family)
            inputs = lm.adapter.build_inputs(lm.processor, scene(), QUESTION)
            kw = dict(max_new_tokens=STEPS, do_sample=False)
            eager = AutoModelForImageTextToText.from_pretrained(checkpoint(family), attn_implementation="eager").eval()
            ref = eager.generate(**inputs, **kw, return_dict_in_generate=True, output_attentions=True)
            sdpa = AutoModelForImageTextToText.from_pretrained(checkpoint(family), attn_implementation="sdpa").eval()
            plain = sdpa.generate(**inputs, **kw)
            cache[family] = (inputs, ref, plain)
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_rows_and_tokens(loaded, reference, family):
    lm = loaded(family)
    inputs, ref, plain = reference(family)
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS)
    n = inputs["input_ids"].shape[1]
    assert s.generated_ids.tolist() == plain[0, n:].tolist()  # capture does not change generation
    assert s.generated_ids.tolist() == ref.sequences[0, n:].tolist()  # same sequence as the reference
    layers = len(ref.attentions[0])
    assert s.decode.shape[:2] == (STEPS, layers)
    for t in range(s.n_steps):
        for layer in range(layers):
            a = ref.attentions[t][layer][0]
            want = a[:, -1] if t == 0 else a[:, 0]
            # a sliding-window layer's decode call sees its cache's last keys only (Gemma 3's local layers)
            first = n + t - want.shape[-1]
            got = s.decode[t, layer, :, first : n + t]
            np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
            assert (s.decode[t, layer, :, n + t :] == 0).all() and (s.decode[t, layer, :, :first] == 0).all()


@pytest.mark.parametrize("mode", PREFILL_MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_rows(loaded, reference, family, mode, caplog):
    lm = loaded(family)
    inputs, ref, _ = reference(family)
    with caplog.at_level(logging.WARNING, logger="vlmattn"):
        s = capture_attention(lm, scene(), QUESTION, max_new_tokens=1, prefill_rows=mode)
    n = inputs["input_ids"].shape[1]
    vision = s.image_positions  # vision tokens and box-less image tokens (CLS, newline, markers)
    want_pos = prefill_positions(mode, n, vision)
    assert s.prefill_positions.tolist() == want_pos.tolist()
    if mode == "last":
        assert want_pos.tolist() == [n - 1]
    elif mode == "text_after_image":
        assert want_pos[0] == vision.max() + 1 and want_pos[-1] == n - 1
    elif mode == "all_text":
        assert len(want_pos) == n - len(vision) and not np.isin(want_pos, vision).any()
    else:
        assert len(want_pos) == n
    for layer in range(len(ref.attentions[0])):
        want = ref.attentions[0][layer][0][:, want_pos]
        np.testing.assert_allclose(s.prefill[layer], want.numpy(), atol=1e-5, rtol=0)
    warned = [r.getMessage() for r in caplog.records if "prefill_rows 'all'" in r.getMessage()]
    if mode == "all":
        cfg = lm.model.config.get_text_config()
        expected = cfg.num_hidden_layers * cfg.num_attention_heads * n * n * 4
        assert len(warned) == 1 and f"{expected:,} bytes" in warned[0]
    else:
        assert not warned
