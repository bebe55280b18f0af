"""Online visual-token pruning (:mod:`vlmattn.engine.pruned`) on the tiny LLaVA and LLaVA-NeXT checkpoints.

References: plain greedy ``lm.model.generate`` (nothing pruned: bitwise), and an independent forward
pass that calls the decoder layers one by one without a cache — full sequence below layer ``K``, the
kept tokens from ``K`` on, rotary positions original or renumbered — over the prompt plus the generated
tokens, whose greedy choices and first logits the pruned generation must match.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vlmattn.engine.inference import model_inputs
from vlmattn.engine.pruned import dropped_prompt_positions, generate_pruned
from vlmattn.errors import InputError
from vlmattn.families import ONLINE_PRUNING

STEPS = 4
QUESTION = "What shape is in the image?"
ATOL = 1e-5


def scene():
    im = Image.new("RGB", (150, 90), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([20, 10, 70, 60], fill=(40, 180, 60))
    return im


@pytest.fixture(scope="module", params=ONLINE_PRUNING)
def lm(loaded, request):
    return loaded(request.param)


@pytest.fixture(scope="module")
def setup(lm):
    """(inputs, vision positions [V], plain generate output with logits)."""
    inputs = model_inputs(lm, scene(), QUESTION)
    layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, scene().size)
    vision = np.concatenate([np.arange(s, e) for s, e in layout.spans])
    with torch.no_grad():
        plain = lm.model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True,
                                  output_logits=True)
    return inputs, vision, plain


def subset(v: int) -> np.ndarray:
    """A fixed, unsorted subset of about a third of ``v`` vision tokens."""
    return np.random.default_rng(3).permutation(v)[: v // 3]


@torch.no_grad()
def reference_logits(lm, inputs, ids: torch.Tensor, dropped: np.ndarray, layer: int, positions: str) -> torch.Tensor:
    """Logits ``[M', vocab]`` of the ``M`` tokens ``ids`` (prompt + generated), one cache-free pass:
    layers ``< layer`` on all ``M`` tokens at positions ``0 … M−1``, then the tokens not in ``dropped``
    at their original positions (``keep``) or at ``0 … M'−1`` (``renumber``). Rows are the kept tokens."""
    model = lm.model.model
    text = model.text_model if hasattr(model, "text_model") else model.language_model
    m = int(ids.shape[0])
    embeds = text.embed_tokens(ids[None])
    cfg = lm.model.config
    # the family's image inputs (LLaVA-NeXT's image_sizes, Idefics3's pixel_attention_mask) and settings
    accepted = inspect.signature(model.get_image_features).parameters
    kw = {k: inputs[k] for k in ("image_sizes", "pixel_attention_mask") if k in inputs and k in accepted}
    kw.update({k: getattr(cfg, k) for k in ("vision_feature_layer", "vision_feature_select_strategy")
               if k in accepted and hasattr(cfg, k)})
    feats = model.get_image_features(pixel_values=inputs["pixel_values"], **kw).pooler_output
    feats = torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats.reshape(-1, feats.shape[-1])
    image = (inputs["input_ids"][0] == cfg.image_token_id).nonzero()[:, 0]
    embeds[0, image] = feats
    kept = torch.as_tensor(np.setdiff1d(np.arange(m), dropped))
    h, pos = embeds, torch.arange(m)[None]
    for i, decoder_layer in enumerate(text.layers):
        if i == layer:
            h = h[:, kept]
            pos = pos[:, kept] if positions == "keep" else torch.arange(len(kept))[None]
        h = decoder_layer(h, attention_mask=None, position_embeddings=text.rotary_emb(h, pos), position_ids=pos)
    if layer == len(text.layers):
        h = h[:, kept]
    return lm.model.lm_head(text.norm(h))[0]


def check_against_reference(lm, setup, result, layer, positions):
    inputs, _, _ = setup
    n = int(inputs["input_ids"].shape[1])
    gen = torch.as_tensor(result.generated_ids)
    ids = torch.cat([inputs["input_ids"][0], gen[:-1]])
    logits = reference_logits(lm, inputs, ids, result.dropped_positions, layer, positions)
    first = n - len(result.dropped_positions) - 1  # row of the last prompt token among the kept ones
    np.testing.assert_allclose(result.logits, logits[first:].numpy(), rtol=0, atol=ATOL)
    assert logits[first:].argmax(-1).tolist() == result.generated_ids.tolist()


@pytest.mark.parametrize("mode,positions", [("drop", "keep"), ("drop", "renumber"), ("mask", "keep")])
@pytest.mark.parametrize("layer", [0, 1])
def test_nothing_pruned_is_plain_generate(lm, setup, mode, positions, layer):
    inputs, vision, plain = setup
    n = int(inputs["input_ids"].shape[1])
    for keep in (None, np.random.default_rng(0).permutation(len(vision))):
        r = generate_pruned(lm, scene(), QUESTION, keep=keep, layer=layer, mode=mode, positions=positions,
                            max_new_tokens=STEPS)
        assert np.array_equal(r.generated_ids, plain.sequences[0, n:].numpy())
        assert np.array_equal(r.first_logits, plain.logits[0][0].numpy())  # bitwise
        assert np.array_equal(r.logits, torch.cat(plain.logits).numpy())
        assert len(r.dropped_positions) == 0 and np.array_equal(r.kept_positions, np.arange(n))
        assert r.prefill_lengths.tolist() == [n] * 2
        assert r.cache_lengths.tolist() == [n + STEPS - 1] * 2


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_drop_matches_mask_with_original_positions(lm, setup, layer):
    _, vision, _ = setup
    keep = subset(len(vision))
    kw = dict(keep=keep, layer=layer, positions="keep", max_new_tokens=STEPS)
    drop = generate_pruned(lm, scene(), QUESTION, mode="drop", **kw)
    mask = generate_pruned(lm, scene(), QUESTION, mode="mask", **kw)
    np.testing.assert_allclose(drop.first_logits, mask.first_logits, rtol=0, atol=ATOL)
    np.testing.assert_allclose(drop.logits, mask.logits, rtol=0, atol=ATOL)
    assert np.array_equal(drop.generated_ids, mask.generated_ids)
    if layer < 2:  # pruning changes the output unless it starts after the last layer
        assert np.abs(drop.first_logits - setup[2].logits[0][0].numpy()).max() > 1e-3


@pytest.mark.parametrize("mode,positions", [("drop", "keep"), ("drop", "renumber"), ("mask", "keep")])
@pytest.mark.parametrize("layer", [0, 1])
def test_pruned_generation_matches_layerwise_reference(lm, setup, mode, positions, layer):
    _, vision, _ = setup
    r = generate_pruned(lm, scene(), QUESTION, keep=subset(len(vision)), layer=layer, mode=mode,
                        positions=positions, max_new_tokens=STEPS)
    check_against_reference(lm, setup, r, layer, positions)


def test_renumbering_changes_positions(lm, setup):
    _, vision, _ = setup
    kw = dict(keep=subset(len(vision)), layer=1, mode="drop", max_new_tokens=STEPS)
    a = generate_pruned(lm, scene(), QUESTION, positions="keep", **kw)
    b = generate_pruned(lm, scene(), QUESTION, positions="renumber", **kw)
    assert np.abs(a.first_logits - b.first_logits).max() > 1e-4


@pytest.mark.parametrize("layer", [0, 1])
def test_cache_lengths_and_layers_below_k(lm, setup, layer):
    inputs, vision, plain = setup
    n = int(inputs["input_ids"].shape[1])
    keep = subset(len(vision))
    d = len(vision) - len(keep)
    r = generate_pruned(lm, scene(), QUESTION, keep=keep, layer=layer, mode="drop", positions="keep",
                        max_new_tokens=STEPS)
    expected_dropped = np.sort(np.setdiff1d(vision, vision[keep]))
    assert np.array_equal(r.dropped_positions, expected_dropped)
    assert np.array_equal(r.kept_positions, np.setdiff1d(np.arange(n), expected_dropped))
    assert r.prefill_lengths.tolist() == [n] * layer + [n - d] * (2 - layer)
    assert r.cache_lengths.tolist() == [n + STEPS - 1] * layer + [n - d + STEPS - 1] * (2 - layer)
    for i in range(2):
        keys, values = r.cache.layers[i].keys, r.cache.layers[i].values
        assert keys.shape[-2] == values.shape[-2] == r.cache_lengths[i]
        ref_keys = plain.past_key_values.layers[i].keys[..., :n, :]
        if i < layer:  # untouched: the prompt's keys and values are bitwise those of the unpruned run
            assert torch.equal(keys[..., :n, :], ref_keys)
            assert torch.equal(values[..., :n, :], plain.past_key_values.layers[i].values[..., :n, :])
    if layer == 1:  # layer 1's input differs from the unpruned run only from the first dropped token on
        first = int(expected_dropped[0])
        torch.testing.assert_close(r.cache.layers[1].keys[..., :first, :],
                                   plain.past_key_values.layers[1].keys[..., :first, :], rtol=0, atol=ATOL)


def test_mask_keeps_sequence_and_cache(lm, setup):
    inputs, vision, _ = setup
    n = int(inputs["input_ids"].shape[1])
    r = generate_pruned(lm, scene(), QUESTION, keep=subset(len(vision)), layer=1, mode="mask", positions="keep",
                        max_new_tokens=STEPS)
    assert r.prefill_lengths.tolist() == [n, n]
    assert r.cache_lengths.tolist() == [n + STEPS - 1] * 2
    assert r.prefill_seconds > 0 and r.decode_seconds > 0
    assert r.memory_kind == "rss" and r.peak_memory_bytes > 0


def test_keep_nothing(lm, setup):
    inputs, vision, _ = setup
    n = int(inputs["input_ids"].shape[1])
    r = generate_pruned(lm, scene(), QUESTION, keep=np.zeros(0, np.int64), layer=1, mode="drop",
                        positions="renumber", max_new_tokens=STEPS)
    assert r.prefill_lengths.tolist() == [n, n - len(vision)]
    check_against_reference(lm, setup, r, 1, "renumber")


def test_dropped_prompt_positions():
    vision = np.array([5, 6, 7, 9])
    assert dropped_prompt_positions(vision, None).tolist() == []
    assert dropped_prompt_positions(vision, np.array([3, 0])).tolist() == [6, 7]
    for bad in (np.array([4]), np.array([-1]), np.array([1, 1]), np.array([[0]]), np.array([0.5])):
        with pytest.raises(ValueError):
            dropped_prompt_positions(vision, bad)


def test_bad_arguments(lm):
    kw = dict(keep=None, layer=1, mode="drop", positions="keep", max_new_tokens=2)
    with pytest.raises(ValueError, match="families"):
        generate_pruned(dataclasses.replace(lm, family="qwen2_vl"), scene(), QUESTION, **kw)
    with pytest.raises(ValueError, match="mode"):
        generate_pruned(lm, scene(), QUESTION, **{**kw, "mode": "zero"})
    with pytest.raises(ValueError, match="positions must be 'keep'"):
        generate_pruned(lm, scene(), QUESTION, **{**kw, "mode": "mask", "positions": "renumber"})
    with pytest.raises(ValueError, match="layer"):
        generate_pruned(lm, scene(), QUESTION, **{**kw, "layer": 3})
    with pytest.raises(InputError, match="indices outside"):
        generate_pruned(lm, scene(), QUESTION, **{**kw, "keep": np.array([10_000])})
