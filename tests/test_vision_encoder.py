"""Vision-encoder summaries equal those computed from reference attention weights.

CLIP (llava): reference weights from the vision tower run eagerly with ``output_attentions=True``.
Qwen: their vision towers return attention outputs, not weights, under ``output_attentions``, so the
reference recomputes every block's weights densely from the block's own inputs (hooked): q, k from
``qkv`` + vision rope, one softmax over the whole sequence with a mask allowing only pairs inside the
same ``cu_seqlens`` segment. Sequence positions are mapped to raster patches independently of the
library: Qwen2.5-VL's window permutation is recovered by matching the first block's input rows to
``patch_embed(pixel_values)`` rows, and block-major → raster by a reshape.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from vlmattn.engine.inference import capture_attention
from vlmattn.store import read_sample, write_sample

from .conftest import FAMILIES

QUESTION = "What shape is in the image?"


def noise_image(size=(150, 90), seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def rollout(mats):
    """Abnar & Zuidema rollout after each layer from head-mean matrices ``[T, T]``."""
    r, out = None, []
    for m in mats:
        step = 0.5 * m + 0.5 * np.eye(len(m))
        step = step / step.sum(-1, keepdims=True)
        r = step if r is None else step @ r
        out.append(r)
    return out


def clip_reference(checkpoint, inputs):
    """Per encoder image (LLaVA's image, LLaVA-NeXT's tiles), ``[L, H, T, T]`` eager weights."""
    eager = AutoModelForImageTextToText.from_pretrained(checkpoint, attn_implementation="eager").eval()
    pixels = inputs["pixel_values"]
    pixels = pixels.flatten(0, 1) if pixels.dim() == 5 else pixels  # LLaVA-NeXT: [1, tiles, C, S, S]
    tower = eager.model.vision_model if hasattr(eager.model, "vision_model") else eager.model.vision_tower
    with torch.no_grad():
        out = tower(pixels, output_attentions=True)
    # order CLS, patches raster = the tower's own order
    return [np.stack([a[i].numpy() for a in out.attentions]) for i in range(len(pixels))], None


def qwen_reference(lm, inputs, family):
    """Dense weights ``[L, H, P, P]`` in raster order, plus same-segment masks ``[L, P, P]``."""
    visual = lm.model.model.visual
    mod = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    grabbed = []

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        grabbed.append((module, x.detach(), kwargs["cu_seqlens"], kwargs["position_embeddings"]))

    handles = [b.attn.register_forward_pre_hook(hook, with_kwargs=True) for b in visual.blocks]
    try:
        with torch.no_grad():
            lm.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    finally:
        for h in handles:
            h.remove()
    (_, gh, gw), m = inputs["image_grid_thw"][0].tolist(), visual.spatial_merge_size
    n = gh * gw
    # encoder position -> block-major patch (pixel_values row)
    if family == "qwen2_5_vl":
        with torch.no_grad():
            emb = visual.patch_embed(inputs["pixel_values"])
        seq_to_row = torch.cdist(grabbed[0][1], emb).argmin(dim=1).numpy()
        assert sorted(seq_to_row.tolist()) == list(range(n))
    else:
        seq_to_row = np.arange(n)
    row_to_seq = np.argsort(seq_to_row)
    block_at_raster = np.arange(n).reshape(gh // m, gw // m, m, m).transpose(0, 2, 1, 3).reshape(-1)
    seq = row_to_seq[block_at_raster]  # encoder position of each raster patch
    weights, same = [], []
    for module, x, cu, (cos, sin) in grabbed:
        qkv = module.qkv(x).reshape(n, 3, module.num_heads, -1).permute(1, 0, 2, 3)
        q, k = mod.apply_rotary_pos_emb_vision(qkv[0], qkv[1], cos, sin)
        scores = torch.einsum("shd,thd->hst", q.float(), k.float()) * module.scaling
        segment = torch.bucketize(torch.arange(n), cu[1:].long(), right=True)
        allowed = segment[:, None] == segment[None, :]
        a = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).detach().numpy()
        weights.append(a[:, seq][:, :, seq])
        same.append(allowed.numpy()[seq][:, seq])
    return np.stack(weights), np.stack(same)


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_summaries_match_reference(loaded, checkpoint, family, tmp_path):
    lm = loaded(family)
    image = noise_image()
    inputs = lm.adapter.build_inputs(lm.processor, image, QUESTION)
    # towers that run one sequence an image or tile
    clip = family in ("llava", "llava_next", "llava_onevision", "internvl", "gemma3", "idefics3", "smolvlm")
    if clip:
        refs, same = clip_reference(checkpoint(family), inputs)
    else:
        ref, same = qwen_reference(lm, inputs, family)
        refs = [ref]
    s = capture_attention(lm, image, QUESTION, max_new_tokens=2, vision_full=True)
    ve = s.vision_encoder
    n_cls = 1 if family in ("llava", "llava_next", "internvl") else 0  # SigLIP (Gemma 3, OneVision) has no CLS
    L, H = refs[0].shape[:2]
    P = sum(r.shape[-1] - n_cls for r in refs)
    assert ve.has_cls == bool(n_cls)
    assert ve.received.shape == (L, H, P) and ve.rollout_received.shape == (L, P)
    tol = dict(atol=1e-5, rtol=0)
    assert len(ve.full) == len(refs)
    for got, ref in zip(ve.full, refs, strict=True):
        np.testing.assert_allclose(got, ref, **tol)
    np.testing.assert_allclose(ve.received, np.concatenate([r.mean(axis=2)[:, :, n_cls:] for r in refs], -1), **tol)
    rolls = [rollout(r.mean(axis=1)) for r in refs]
    want = np.concatenate([np.stack([r.mean(0)[n_cls:] for r in roll]) for roll in rolls], -1)
    np.testing.assert_allclose(ve.rollout_received, want, **tol)
    if n_cls:
        np.testing.assert_allclose(ve.cls_attention, np.concatenate([r[:, :, 0, 1:] for r in refs], -1), **tol)
        want = np.concatenate([np.stack([r[0, 1:] for r in roll]) for roll in rolls], -1)
        np.testing.assert_allclose(ve.rollout_cls, want, **tol)
    else:
        assert ve.cls_attention.shape == (L, H, 0) and ve.rollout_cls.shape == (L, 0)
    if same is None:  # one sequence an image or tile: patches share a segment when they share it
        tile = np.repeat(np.arange(len(refs)), [r.shape[-1] - n_cls for r in refs])
        same = np.broadcast_to(tile[:, None] == tile[None, :], (L, P, P))
    # segments: two patches share one exactly when the reference lets them attend to each other
    for layer in range(L):
        seg = ve.segment[layer]
        assert ((seg[:, None] == seg[None, :]) == same[layer]).all()
    if family == "qwen2_5_vl":
        visual = lm.model.model.visual
        n_windows = [len(np.unique(ve.segment[layer])) for layer in range(L)]
        for layer in range(L):
            assert (n_windows[layer] == 1) == (layer in visual.fullatt_block_indexes)
        assert max(n_windows) > 1
    # patches → LLM tokens and boxes
    if not clip:
        np.testing.assert_array_equal(ve.patch_grid, [[int(v) for v in inputs["image_grid_thw"][0, 1:]]])
    # patches a token side: InternVL's pixel shuffle 0.5, Gemma 3's 2 × 2 pooling (replica), Qwen's merge,
    # the Idefics3 and SmolVLM replicas' pixel shuffle 2 and 4
    merge = {"llava": 1, "llava_next": 1, "llava_onevision": 1, "smolvlm": 4}.get(family, 2)
    fed = ve.patch_token >= 0  # LLaVA-NeXT: patches of the padding the model removes feed no token
    counts = np.bincount(ve.patch_token[fed], minlength=len(s.token_boxes))
    if family == "llava_onevision":  # a downsampled high-resolution grid: one or more patches a token
        assert (counts >= 1).all()
    else:
        assert counts.tolist() == [merge * merge] * len(s.token_boxes)
    pb, tb = ve.patch_boxes[fed], s.token_boxes[ve.patch_token[fed]]
    if family == "llava_onevision":  # a patch goes to the downsampled token whose cell holds its centre
        c = (pb[:, :2] + pb[:, 2:]) / 2
        pb = np.concatenate([c, c], axis=1)
    assert (pb[:, 0] >= tb[:, 0] - 1e-3).all() and (pb[:, 2] <= tb[:, 2] + 1e-3).all()
    assert (pb[:, 1] >= tb[:, 1] - 1e-3).all() and (pb[:, 3] <= tb[:, 3] + 1e-3).all()
    # HDF5 round trip of the new group
    write_sample(tmp_path / "s.h5", s, attention_dtype="float32")
    back = read_sample(tmp_path / "s.h5").vision_encoder
    for name in ("received", "cls_attention", "rollout_received", "rollout_cls", "segment", "patch_token",
                 "patch_boxes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ve, name))
    np.testing.assert_array_equal(back.full[0], ve.full[0])


def test_vision_summaries_off_and_no_full_by_default(loaded, tmp_path):
    import h5py

    lm = loaded("qwen2_vl")
    s = capture_attention(lm, noise_image(), QUESTION, max_new_tokens=1)
    assert s.vision_encoder is not None and s.vision_encoder.full == []
    write_sample(tmp_path / "a.h5", s)
    with h5py.File(tmp_path / "a.h5") as f:
        assert "vision_encoder/received" in f and "vision_encoder/full" not in f
    s = capture_attention(lm, noise_image(), QUESTION, max_new_tokens=1, vision_encoder=False)
    assert s.vision_encoder is None
    write_sample(tmp_path / "b.h5", s)
    assert read_sample(tmp_path / "b.h5").vision_encoder is None


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_blocked_computation_is_identical(loaded, family, monkeypatch):
    """Head groups and query-row blocks (forced by a tiny memory cap) give the same summaries."""
    import vlmattn.engine.vision

    lm = loaded(family)
    whole = capture_attention(lm, noise_image(), QUESTION, max_new_tokens=1, vision_full=True).vision_encoder
    monkeypatch.setattr(vlmattn.engine.vision, "_CHUNK_BYTES", 4 * 50 * 7)  # 1 head, a few rows at a time
    blocked = capture_attention(lm, noise_image(), QUESTION, max_new_tokens=1, vision_full=True).vision_encoder
    for name in ("received", "cls_attention", "rollout_received", "rollout_cls", "segment"):
        np.testing.assert_allclose(getattr(blocked, name), getattr(whole, name), atol=1e-6, rtol=0)
    np.testing.assert_allclose(blocked.full[0], whole.full[0], atol=1e-6, rtol=0)


def test_rollout_can_be_switched_off(loaded, tmp_path):
    lm = loaded("llava")
    on = capture_attention(lm, noise_image(), QUESTION, max_new_tokens=1).vision_encoder
    off = capture_attention(lm, noise_image(), QUESTION, max_new_tokens=1, vision_rollout=False).vision_encoder
    assert on.has_rollout and not off.has_rollout
    assert off.rollout_received.shape == (on.received.shape[0], 0) == off.rollout_cls.shape
    np.testing.assert_array_equal(off.received, on.received)
    np.testing.assert_array_equal(off.cls_attention, on.cls_attention)
