"""Captured rows equal transformers' own eager attention; generation is unchanged."""

import numpy as np
import pytest
import torch

from vlmattn.engine.inference import capture_attention, load_model, prefill_positions
from vlmattn.images.synthetic import DEFAULT_SCENES, draw

QUESTION = "What shape is in the image?"
NEW = 6


def eager_reference(path, image, question):
    """Eager generate with output_attentions=True: (sequences, attentions) on a fresh copy."""
    lm = load_model("ref", "llava", str(path))
    lm.model.set_attn_implementation("eager")
    inputs = lm.adapter.build_inputs(lm.processor, image, question)
    with torch.no_grad():
        out = lm.model.generate(**inputs, max_new_tokens=NEW, do_sample=False, min_new_tokens=NEW,
                                output_attentions=True, return_dict_in_generate=True)
    return inputs["input_ids"].shape[1], out


def sdpa_reference(path, image, question):
    lm = load_model("ref", "llava", str(path))
    lm.model.set_attn_implementation("sdpa")
    inputs = lm.adapter.build_inputs(lm.processor, image, question)
    with torch.no_grad():
        return lm.model.generate(**inputs, max_new_tokens=NEW, do_sample=False, min_new_tokens=NEW)


@pytest.fixture(scope="module")
def image():
    return draw(DEFAULT_SCENES["triangle_topleft"], 48)


@pytest.mark.parametrize("checkpoint", ["gqa_checkpoint", "mha_checkpoint"])
def test_decode_rows_equal_eager(checkpoint, image, request):
    path = request.getfixturevalue(checkpoint)
    lm = load_model("toy", "llava", str(path))
    lm.model.generation_config.min_new_tokens = NEW
    s = capture_attention(lm, image, QUESTION, max_new_tokens=NEW, prefill_rows="all_text")
    n, ref = eager_reference(path, image, QUESTION)
    n_layers = len(ref.attentions[0])
    assert s.decode.shape[:2] == (NEW, n_layers)
    for t in range(NEW):
        for layer in range(n_layers):
            att = ref.attentions[t][layer][0]
            expect = att[:, -1] if t == 0 else att[:, 0]
            got = s.decode[t, layer, :, : n + t]
            np.testing.assert_allclose(got, expect.numpy(), atol=1e-5, rtol=0)
            assert not s.decode[t, layer, :, n + t :].any()
    # prefill rows of every text position
    pos = s.prefill_positions
    for layer in range(n_layers):
        np.testing.assert_allclose(s.prefill[layer], ref.attentions[0][layer][0][:, pos].numpy(), atol=1e-5, rtol=0)
    # identical generation to eager and to plain SDPA
    assert s.generated_ids.tolist() == ref.sequences[0, n:].tolist()
    assert s.generated_ids.tolist() == sdpa_reference(path, image, QUESTION)[0, n:].tolist()


def test_language_and_vision_towers_get_their_own_capture(gqa_checkpoint):
    lm = load_model("toy", "llava", str(gqa_checkpoint))
    assert lm.model.config.text_config._attn_implementation == "vlmattn_capture"
    assert lm.model.config.vision_config._attn_implementation == "vlmattn_vision"


def test_prefill_positions_modes():
    vision = np.arange(2, 6)
    assert prefill_positions("last", 9, vision).tolist() == [8]
    assert prefill_positions("text_after_image", 9, vision).tolist() == [6, 7, 8]
    assert prefill_positions("all_text", 9, vision).tolist() == [0, 1, 6, 7, 8]
    assert prefill_positions("all", 9, vision).tolist() == list(range(9))
    with pytest.raises(ValueError, match="prefill_rows"):
        prefill_positions("some", 9, vision)


def test_default_prefill_is_one_row(gqa_checkpoint, image):
    """The default never stores a [layer, head, N, N] matrix."""
    lm = load_model("toy", "llava", str(gqa_checkpoint))
    s = capture_attention(lm, image, QUESTION, max_new_tokens=2)
    n = len(s.input_ids)
    assert s.prefill.shape[2:] == (1, n)
    assert s.prefill_positions.tolist() == [n - 1]
