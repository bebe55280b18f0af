"""Gradient attributions (:mod:`vlmattn.attribution.gradients`) on tiny checkpoints.

References: transformers' eager attention (``output_attentions=True``, the weights' gradients retained)
for attention × gradient; the model's own forward pass for the vision-token function; autograd for
saliency; completeness (Σ IG = f(x) − f(b)) for captum's integrated gradients; the pipeline's
language-model rollout (:func:`vlmattn.engine.inference.llm_rollout_rows`) for the rollout map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vlmattn.attribution import gradients as g
from vlmattn.engine.inference import extended_inputs, llm_rollout_rows, model_inputs

QUESTION = "What shape is in the image?"


def scene():
    im = Image.new("RGB", (64, 48), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([6, 4, 30, 28], fill=(40, 180, 60))
    return im


def setup(lm):
    inputs = model_inputs(lm, scene(), QUESTION)
    layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, scene().size)
    vision = np.concatenate([np.arange(s, e) for s, e in layout.spans])
    with torch.no_grad():
        logits = lm.model(**inputs).logits[0, -1]
    return inputs, vision, int(logits.argmax()), torch.log_softmax(logits.float(), -1)


def eager_relevance(path, inputs, target):
    """Ā_l = mean_h (∇A ⊙ A)⁺ from transformers' eager attention weights."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
    n = int(inputs["input_ids"].shape[1])
    run = extended_inputs(inputs, torch.cat([inputs["input_ids"][0], torch.tensor([target])]))
    out = model(**run, use_cache=False, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    torch.log_softmax(out.logits[0, n - 1].float(), -1)[target].backward()
    return np.stack([(a.grad[0] * a[0]).clamp(min=0).mean(0).detach().double().numpy() for a in out.attentions])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_attention_gradient_equals_eager(loaded, checkpoint, family):
    lm = loaded(family)
    inputs, _, target, logp = setup(lm)
    ap = g.answer_pass(lm, inputs, target)
    ref = eager_relevance(checkpoint(family), inputs, target)
    assert ap.relevance.shape == ref.shape
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ap.relevance, ref, atol=1e-6 * np.abs(ref).max(), rtol=1e-4)
    assert ap.log_prob == pytest.approx(float(logp[target]), abs=1e-5)


def test_attention_gradient_with_frozen_weights_accumulates_no_parameter_gradient(loaded):
    """The same relevance whether or not the weights require grad, and no parameter gradient left behind."""
    lm = loaded("llava")
    inputs, _, target, _ = setup(lm)
    ref = g.answer_pass(lm, inputs, target)
    params = list(lm.model.parameters())
    assert all(p.grad is None for p in params)
    try:
        lm.model.requires_grad_(False)
        frozen = g.answer_pass(lm, inputs, target)
    finally:
        lm.model.requires_grad_(True)
    np.testing.assert_allclose(frozen.relevance, ref.relevance, atol=1e-9)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_vision_token_function_is_the_models_log_probability(loaded, family):
    """f(the model's own vision embeddings) is the answer's log-probability of a plain forward pass, and
    changing one vision token's embedding changes it."""
    lm = loaded(family)
    inputs, vision, target, logp = setup(lm)
    f = g.VisionTokenFunction(lm, inputs, vision, target)
    assert f.embeddings.shape[:2] == (1, len(vision))
    with torch.no_grad():
        value = f(f.embeddings)
        moved = f.embeddings.clone()
        moved[0, 0] += 1.0
        other = f(torch.cat([f.embeddings, moved]))
    assert float(value[0]) == pytest.approx(float(logp[target]), abs=1e-5)
    assert float(other[0]) == pytest.approx(float(value[0]), abs=1e-6)
    assert abs(float(other[1]) - float(value[0])) > 1e-6


def test_integrated_gradients_are_complete_and_saliency_is_the_gradient(loaded):
    lm = loaded("llava")
    inputs, vision, target, _ = setup(lm)
    f = g.VisionTokenFunction(lm, inputs, vision, target)
    base = g.VisionTokenFunction(lm, g.blank_inputs(inputs), vision, target).embeddings
    ia = g.input_attribution(f, f.embeddings, base, n_steps=64)
    change = ia.value - ia.baseline_value
    assert abs(change) > 1e-3
    assert ia.integrated_gradients.sum() == pytest.approx(change, rel=1e-3)
    assert ia.delta == pytest.approx(ia.integrated_gradients.sum() - change, abs=1e-5)
    x = f.embeddings.detach().float().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    np.testing.assert_allclose(ia.saliency, grad[0].abs().sum(-1).double().numpy(), rtol=1e-5, atol=1e-9)


def test_rollout_map_equals_the_pipeline_rollout(loaded):
    lm = loaded("llava")
    inputs, vision, target, _ = setup(lm)
    ap = g.answer_pass(lm, inputs, target)
    ids = inputs["input_ids"][0]
    decode, _ = llm_rollout_rows(lm, inputs, ids, np.array([len(ids) - 1]))
    ours = g.attention_rollout(ap.attention)[ap.query]
    np.testing.assert_allclose(ours[: len(ids)], decode[0, : len(ids)].numpy(), atol=1e-6)


def test_relevance_rollout_closed_form():
    a = np.zeros((2, 3, 3))
    a[0, 2, 0] = 0.5
    a[1, 2, 1] = 1.0
    a[1, 1, 0] = 0.25
    # R1 = I + A0; R2 = R1 + A1 R1
    r1 = np.eye(3) + a[0]
    np.testing.assert_allclose(g.relevance_rollout(a), r1 + a[1] @ r1)


def test_pixel_integrated_gradients_are_complete_and_mapped_to_patches(loaded):
    lm = loaded("llava")
    inputs, vision, target, logp = setup(lm)
    f = g.PixelFunction(lm, inputs, target)
    with torch.no_grad():
        assert float(f(f.pixels)[0]) == pytest.approx(float(logp[target]), abs=1e-5)
    patches = lm.adapter.patch_layout(lm.model, lm.processor, inputs, (150, 90))
    pa = g.pixel_attribution(f, patches.grids, patches.patch_token, n_steps=128, batch=32)
    change = pa.value - pa.baseline_value
    assert abs(change) > 1e-3
    assert pa.tokens.sum() == pytest.approx(change, rel=1e-3)
    assert pa.tokens.shape == (len(vision),)


def test_token_sums_closed_form():
    """Two tiles of 2 × 2 patches; patches feed tokens 2, 0, -1 (none), 1 | 1, 1, 3, -1."""
    a = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4)
    patch = [a[t, :, r * 2:(r + 1) * 2, c * 2:(c + 1) * 2].sum() for t in range(2) for r in range(2) for c in range(2)]
    token = np.array([2, 0, -1, 1, 1, 1, 3, -1])
    want = [patch[1], patch[3] + patch[4] + patch[5], patch[0], patch[6]]
    np.testing.assert_allclose(g.token_sums(a, [[2, 2], [2, 2]], token, 4), want)
    with pytest.raises(ValueError, match="2 tiles of pixel values for 1 encoder images"):
        g.token_sums(a, [[2, 2]], token, 4)


def test_patch_sums_closed_form():
    a = np.arange(2 * 4 * 6, dtype=float).reshape(2, 4, 6)
    got = g.patch_sums(a, (2, 3))
    ref = [a[:, r * 2:(r + 1) * 2, c * 2:(c + 1) * 2].sum() for r in range(2) for c in range(3)]
    np.testing.assert_allclose(got, ref)
    with pytest.raises(ValueError, match="does not tile"):
        g.patch_sums(a, (3, 3))
