"""Batched generation: every sample of a batch is what it is alone.

For each family, three samples with different prompt lengths (questions) and image sizes (different
numbers of vision tokens for the Qwen families) run through one ``generate`` call (left padding,
attention mask, the family's own position ids) and one at a time. Per sample, the generated ids,
the decode rows, the prefill rows, the language-model rollout and the vision-encoder summaries must
agree within 1e-5 in float32, with the same shapes: padding columns removed, rows on the sample's
own positions. A sample that stops early (EOS) stores no row past its end.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vlmattn.engine.inference import capture_attention, capture_batch, generated_length

from .conftest import FAMILIES

QUESTIONS = ["What shape is in the image?", "Colour?", "Is there anything in the top left corner of the picture?"]
SIZES = [(150, 90), (84, 112), (200, 140)]
SETTINGS = dict(max_new_tokens=5, prefill_rows="all_text", prefill_layers=[1], vision_encoder=True,
                vision_rollout=True, llm_rollout=True)
ATOL = 1e-5


def picture(size, seed):
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(x) for x in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        d.rectangle([x0, y0, x0 + size[0] // 3, y0 + size[1] // 3], fill=tuple(int(x) for x in rng.integers(0, 255, 3)))
    return im


IMAGES = [picture(s, i) for i, s in enumerate(SIZES)]


def assert_same(got, want):
    np.testing.assert_array_equal(got.input_ids, want.input_ids)
    np.testing.assert_array_equal(got.generated_ids, want.generated_ids)
    assert got.attrs["generated_text"] == want.attrs["generated_text"]
    np.testing.assert_array_equal(got.decode_key_len, want.decode_key_len)
    for name in ("spans", "grid", "token_boxes", "cls_positions", "piece_image", "marker_positions",
                 "prefill_positions", "prefill_layers"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.piece_kinds == want.piece_kinds and got.marker_kinds == want.marker_kinds
    for name in ("decode", "prefill", "rollout_decode", "rollout_prefill"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0, err_msg=name)
    va, vb = got.vision_encoder, want.vision_encoder
    for name in ("patch_grid", "patch_spans", "patch_boxes", "patch_token", "segment"):
        np.testing.assert_array_equal(getattr(va, name), getattr(vb, name), err_msg=name)
    for name in ("received", "cls_attention", "rollout_received", "rollout_cls"):
        a, b = getattr(va, name), getattr(vb, name)
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_gives_each_sample_what_it_gives_alone(loaded, family):
    lm = loaded(family)
    alone = [capture_attention(lm, im, q, **SETTINGS) for im, q in zip(IMAGES, QUESTIONS, strict=True)]
    lengths = [len(s.input_ids) for s in alone]
    assert len(set(lengths)) == 3, f"the prompts should differ in length: {lengths}"
    if family.startswith("qwen"):
        assert len({len(s.vision_index) for s in alone}) == 3  # different image sizes, different grids
    elif family != "llava":  # tiled: different image sizes, different token boxes
        assert len({s.token_boxes.tobytes() for s in alone}) == 3
    batch = capture_batch(lm, IMAGES, QUESTIONS, **SETTINGS)
    assert len(batch) == 3
    for got, want in zip(batch, alone, strict=True):
        assert_same(got, want)
    # order within the batch does not matter
    again = capture_batch(lm, IMAGES[::-1], QUESTIONS[::-1], **SETTINGS)
    for got, want in zip(again, alone[::-1], strict=True):
        assert_same(got, want)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_a_sample_that_stops_early_stores_nothing_past_its_end(loaded, family):
    lm = loaded(family)
    first = [capture_attention(lm, im, q, **SETTINGS) for im, q in zip(IMAGES, QUESTIONS, strict=True)]
    # make sample 0's second generated token the end-of-sequence token
    eos = int(first[0].generated_ids[1])
    config = lm.model.generation_config
    saved = config.eos_token_id, config.pad_token_id
    config.eos_token_id, config.pad_token_id = eos, saved[1] if saved[1] is not None else eos
    try:
        alone = [capture_attention(lm, im, q, **SETTINGS) for im, q in zip(IMAGES, QUESTIONS, strict=True)]
        batch = capture_batch(lm, IMAGES, QUESTIONS, **SETTINGS)
    finally:
        config.eos_token_id, config.pad_token_id = saved
    assert alone[0].n_steps == 2 and alone[0].generated_ids[-1] == eos
    assert max(s.n_steps for s in alone) > 2, "another sample should run on"
    for got, want in zip(batch, alone, strict=True):
        assert got.decode.shape == want.decode.shape
        assert_same(got, want)


def test_generated_length():
    assert generated_length(np.array([5, 7, 2, 2]), {2}) == 3
    assert generated_length(np.array([5, 7, 8]), {2}) == 3
    assert generated_length(np.array([2, 2]), {2, 9}) == 1
    assert generated_length(np.array([4, 4]), set()) == 2
