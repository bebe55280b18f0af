"""Every map of one sample.

For the answer token ``y`` (the first token the model generated, as cached), one pass of
:func:`.gradients.answer_pass`, integrated gradients and saliency (:func:`.gradients.input_attribution`),
and the maps over the ``V`` vision tokens (grid order, the cache's token boxes):

    attention                    head-mean attention of query ``q`` (which predicts ``y``), mean over the
                                 configured decoder layers
    rollout                      attention rollout through the language model, row ``q``
    attention_gradient           Ā_l[q] (mean over heads of (∇A ⊙ A)⁺), mean over every layer
    attention_gradient_rollout   Chefer's rollout of Ā, row ``q``
    integrated_gradients         Σ_d IG_vd
    integrated_gradients_pixels  IG in pixel space from the blank image, summed over the encoder patches
                                 that feed each token (tiles of tiled families included)
    saliency                     Σ_d |∂f/∂x_vd|
    alignment                    cos(h_L[v], h_L[y]), the last hidden states
    random                       a random order (:func:`.faithfulness.random_map`), the floor

The HDF5 file's layout: :mod:`.store`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store import AttentionSample
from . import alignment as align
from . import gradients as grads
from . import modality_gap as gap
from .faithfulness import random_map, sample_rng
from .store import AttributionArrays


@dataclass
class SampleAttribution(AttributionArrays):
    """The maps and per-layer arrays of one sample (module docstring), its attributes (answer token, IG
    values and completeness), and ``vision_tokens``, ``text_tokens`` ``[L + 1, n, D]``: unit-normalised
    hidden states of a subsample of the tokens, for the separability of :mod:`.modality_gap` (kept in
    memory only)."""

    attrs: dict
    vision_tokens: np.ndarray | None = None
    text_tokens: np.ndarray | None = None


def attention_layers_mean(attention_layers: np.ndarray, layers) -> np.ndarray:
    """Mean over ``layers`` (decoder layer indices; None for all) of ``attention_layers [L, V]`` → ``[V]``."""
    a = np.asarray(attention_layers)
    if layers is None:
        return a.mean(0)
    bad = [x for x in layers if not 0 <= int(x) < len(a)]
    if bad:
        raise ValueError(f"attention layer {bad[0]} does not exist (the model has {len(a)} decoder layers)")
    return a[np.asarray(layers, np.int64)].mean(0)


def attribute(lm, image, question: str, target: int, cached: AttentionSample, *, name: str, seed: int,
              attention_layers, ig_steps: int, ig_baseline: str, pixel_steps: int, ig_batch: int,
              tokens_per_sample: int) -> SampleAttribution:
    """The maps of one sample (module docstring) for ``image`` and ``question`` on ``lm`` and the answer token
    id ``target`` (IG with ``ig_steps`` points from ``ig_baseline``, in pixel space with ``pixel_steps`` points,
    ``ig_batch`` per pass); ``cached`` is the sample's attention cache (its vision tokens must be those of ``lm``'s
    layout); ``name`` and ``seed`` fix the random map and the token subsample."""
    from ..engine.inference import model_inputs

    inputs = model_inputs(lm, image, question)
    layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, image.size)
    vision = layout.vision_positions
    if not np.array_equal(vision, cached.vision_index):
        raise ValueError("the model's vision tokens differ from the cached sample's (was the cache made by "
                         "another model or processor?)")
    n = int(inputs["input_ids"].shape[1])
    text = np.setdiff1d(np.arange(n), layout.image_positions)
    ap = grads.answer_pass(lm, inputs, target)
    q = ap.query
    if ig_baseline not in grads.BASELINES:
        raise ValueError(f"integrated gradients baseline must be one of {grads.BASELINES}, got {ig_baseline!r}")
    f = grads.VisionTokenFunction(lm, inputs, vision, target)
    if ig_baseline == "blank":
        blank = grads.blank_inputs(inputs, lm.adapter.blank_pixel_value)
        base = grads.VisionTokenFunction(lm, blank, vision, target).embeddings
    else:
        base = 0 * f.embeddings
    ia = grads.input_attribution(f, f.embeddings, base, n_steps=ig_steps)
    patches = lm.adapter.patch_layout(lm.model, lm.processor, inputs, image.size)
    pa = grads.pixel_attribution(grads.PixelFunction(lm, inputs, target), patches.grids, patches.patch_token,
                                 n_steps=pixel_steps, batch=ig_batch)
    attention = ap.attention[:, q, vision]
    relevance = ap.relevance[:, q, vision]
    answer = align.cosine_map(ap.hidden, vision, ap.answer)
    maps = {
        "attention": attention_layers_mean(attention, attention_layers),
        "rollout": grads.attention_rollout(ap.attention)[q, vision],
        "attention_gradient": relevance.mean(0),
        "attention_gradient_rollout": grads.relevance_rollout(ap.relevance)[q, vision],
        "integrated_gradients": ia.integrated_gradients,
        "integrated_gradients_pixels": pa.tokens,
        "saliency": ia.saliency,
        "alignment": answer[-1],
        "random": random_map(len(vision), seed, name),
    }
    rng = sample_rng(seed, name, "tokens")
    unit = gap.unit_rows(ap.hidden)
    tok = lm.processor.tokenizer
    return SampleAttribution(
        maps=maps,
        attention_layers=attention,
        relevance_layers=relevance,
        alignment_answer=answer,
        alignment_text=align.cosine_map(ap.hidden, vision, text),
        vision_sum=gap.normalised_sums(ap.hidden, vision),
        text_sum=gap.normalised_sums(ap.hidden, text),
        n_vision=len(vision),
        n_text=len(text),
        attrs={"target_id": int(target), "target_token": tok.decode([int(target)]), "log_prob": ap.log_prob,
               "ig_value": ia.value, "ig_baseline_value": ia.baseline_value, "ig_delta": ia.delta,
               "ig_pixels_value": pa.value, "ig_pixels_baseline_value": pa.baseline_value,
               "ig_pixels_delta": pa.delta,
               "ig_baseline": ig_baseline, "ig_steps": int(ig_steps), "pixel_steps": int(pixel_steps)},
        vision_tokens=unit[:, vision[gap.token_subsample(len(vision), tokens_per_sample, rng)]],
        text_tokens=unit[:, text[gap.token_subsample(len(text), tokens_per_sample, rng)]],
    )
