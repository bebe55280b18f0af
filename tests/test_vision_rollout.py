"""The rollout's vector chain equals the rollout from dense reference weights, whichever way each layer
is kept (head mean, or q, k recomputed), however the weights are blocked; the shared attention output
equals SDPA's.

Synthetic recorder tests feed random q, k, v through :class:`VisionRecorder` for layouts the tiny
checkpoints do not reach (several images, CLS tokens, windows, a permuted encoder order, four layers)
and compare with summaries computed densely in float64. Model tests compare deeper tiny towers with
the reference weights of ``test_vision_encoder``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import vlmattn.engine.vision
from vlmattn.engine.inference import capture_attention, load_model
from vlmattn.engine.vision import PatchLayout, VisionRecorder, instrument, recording, vision_attention_forward
from vlmattn.models import replicas, toy

from .conftest import LLAVA_SPEC, REPLICA_SPEC
from .test_vision_encoder import QUESTION, clip_reference, noise_image, qwen_reference, rollout

KEEP = {"mean": lambda *a: True, "recompute": lambda *a: False, "rule": vlmattn.engine.vision._keeps_mean}


def layout(grids, cls: bool, seed: int = 0) -> PatchLayout:
    """Images one after another in the encoder; with CLS first per image; patches in a random order."""
    rng = np.random.default_rng(seed)
    seq_index, image_seq, cls_seq, start = [], [], [], 0
    for rows, cols in grids:
        n = rows * cols
        cls_seq.append(start if cls else -1)
        first = start + (1 if cls else 0)
        seq_index.append(first + rng.permutation(n))
        image_seq.append((start, first + n))
        start = first + n
    p = sum(r * c for r, c in grids)
    return PatchLayout(
        grids=np.asarray(grids, np.int64), seq_index=np.concatenate(seq_index), image_seq=np.asarray(image_seq,
                                                                                                     np.int64),
        cls_seq=np.asarray(cls_seq, np.int64), patch_token=np.arange(p), patch_boxes=np.zeros((p, 4), np.float32),
    )


class Attention(torch.nn.Module):
    is_causal = False


@torch.no_grad()
def run(lay: PatchLayout, segments: list[list[int]], batched: bool, heads=3, dim=5, seed=0):
    """Feed random q, k, v through the vision attention function with a recorder active;
    segments[l] are the segment lengths of layer l in encoder order. ``batched``: one call per layer
    with every segment a batch element (CLIP); otherwise one call per segment (Qwen). Returns the
    result, the dense per-image weights ``[L, H, T_i, T_i]`` in encoder order, and the largest
    difference of the attention output from SDPA's."""
    gen = torch.Generator().manual_seed(seed)
    rec = VisionRecorder(lay, n_layers=len(segments), rollout=True)
    modules = [Attention() for _ in segments]
    instrument(modules)
    dense = [np.zeros((len(segments), heads, e - s, e - s)) for s, e in lay.image_seq]
    err = 0.0
    for layer, lengths in enumerate(segments):
        calls = [lengths] if batched else [[n] for n in lengths]
        start = 0
        for call in calls:
            q, k, v = (torch.randn(len(call), heads, call[0], dim, generator=gen) for _ in range(3))
            with recording(rec):
                out, _ = vision_attention_forward(modules[layer], q, k, v, None, scaling=dim**-0.5)
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
            err = max(err, float((out - ref).abs().max()))
            for b, n in enumerate(call):
                w = torch.softmax(q[b].double() @ k[b].double().transpose(-1, -2) * dim**-0.5, -1).numpy()
                img = int(np.searchsorted(lay.image_seq[:, 1], start, side="right"))
                i0 = start - int(lay.image_seq[img, 0])
                dense[img][layer, :, i0 : i0 + n, i0 : i0 + n] = w
                start += n
    return rec.result(), dense, err


def check(ve, lay: PatchLayout, dense) -> None:
    spans = lay.patch_spans
    for i, w in enumerate(dense):
        order = lay.image_order(i)
        n_cls = 1 if lay.cls_seq[i] >= 0 else 0
        w = w[:, :, order][:, :, :, order]  # CLS first, patches raster
        roll = rollout(w.mean(axis=1))
        p = slice(*spans[i])
        np.testing.assert_allclose(ve.received[:, :, p], w.mean(axis=2)[:, :, n_cls:], atol=1e-6, rtol=0)
        np.testing.assert_allclose(ve.rollout_received[:, p], np.stack([r.mean(0)[n_cls:] for r in roll]), atol=1e-6,
                                   rtol=0)
        if n_cls:
            np.testing.assert_allclose(ve.cls_attention[:, :, p], w[:, :, 0, 1:], atol=1e-6, rtol=0)
            np.testing.assert_allclose(ve.rollout_cls[:, p], np.stack([r[0, 1:] for r in roll]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("keep", sorted(KEEP))
@pytest.mark.parametrize("chunk", [None, 40])
def test_windows_and_images_without_cls(keep, chunk, monkeypatch):
    """Two images (4×6 and 4×4 patches), layers windowed / full / windowed / full."""
    monkeypatch.setattr(vlmattn.engine.vision, "_keeps_mean", KEEP[keep])
    if chunk:
        monkeypatch.setattr(vlmattn.engine.vision, "_CHUNK_BYTES", chunk)  # one head, one row at a time
    lay = layout([(4, 6), (4, 4)], cls=False)
    windows, full = [8, 8, 8, 4, 4, 4, 4], [24, 16]
    ve, dense, err = run(lay, [windows, full, windows, full], batched=False)
    check(ve, lay, dense)
    assert err < 1e-6


@pytest.mark.parametrize("keep", sorted(KEEP))
@pytest.mark.parametrize("chunk", [None, 40])
def test_batched_images_with_cls(keep, chunk, monkeypatch):
    """Two CLIP-like images of 1 + 3×4 tokens in one call per layer, four layers."""
    monkeypatch.setattr(vlmattn.engine.vision, "_keeps_mean", KEEP[keep])
    if chunk:
        monkeypatch.setattr(vlmattn.engine.vision, "_CHUNK_BYTES", chunk)
    lay = layout([(3, 4), (3, 4)], cls=True, seed=1)
    ve, dense, err = run(lay, [[13, 13]] * 4, batched=True)
    check(ve, lay, dense)
    assert err < 1e-6


def test_single_layer_rollout_is_the_first_step():
    lay = layout([(2, 3)], cls=True)
    ve, dense, _ = run(lay, [[7]], batched=True)
    check(ve, lay, dense)


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """Tiny checkpoints with four encoder layers (Qwen2.5-VL: windowed 0, 3; full 1, 2)."""
    built = {}

    def get(family: str):
        if family not in built:
            out = tmp_path_factory.mktemp(f"deep_{family}")
            if family == "llava":
                model, processor = toy.build_toy(replace(LLAVA_SPEC, vision_layers=4))
            else:
                spec = replace(REPLICA_SPEC, vision_layers=4, full_attention_layers=(1, 2))
                model, processor = replicas.build_replica(family, spec)
            toy.save(model, processor, out)
            built[family] = (out, load_model(f"deep_{family}", family, str(out)))
        return built[family]

    return get


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("keep", ["mean", "recompute"])
def test_deep_tower_rollout_matches_reference(deep, family, keep, monkeypatch):
    """Every layer's summaries, whether computed during the layer or deferred to the rollout sweep."""
    monkeypatch.setattr(vlmattn.engine.vision, "_keeps_mean", KEEP[keep])
    path, lm = deep(family)
    image = noise_image()
    inputs = lm.adapter.build_inputs(lm.processor, image, QUESTION)
    ref = clip_reference(path, inputs)[0][0] if family == "llava" else qwen_reference(lm, inputs, family)[0]
    ve = capture_attention(lm, image, QUESTION, max_new_tokens=1, vision_full=True).vision_encoder
    n_cls = 1 if family == "llava" else 0
    assert ref.shape[0] == 4
    roll = rollout(ref.mean(axis=1))
    tol = dict(atol=1e-6, rtol=0)
    np.testing.assert_allclose(ve.full[0], ref, **tol)
    np.testing.assert_allclose(ve.received, ref.mean(axis=2)[:, :, n_cls:], **tol)
    if n_cls:
        np.testing.assert_allclose(ve.cls_attention, ref[:, :, 0, 1:], **tol)
    np.testing.assert_allclose(ve.rollout_received, np.stack([r.mean(0)[n_cls:] for r in roll]), **tol)
    if n_cls:
        np.testing.assert_allclose(ve.rollout_cls, np.stack([r[0, 1:] for r in roll]), **tol)
    # the default (no full weights kept) stores the same quantities
    plain = capture_attention(lm, image, QUESTION, max_new_tokens=1).vision_encoder
    for name in ("received", "cls_attention", "rollout_received", "rollout_cls", "segment"):
        np.testing.assert_allclose(getattr(plain, name), getattr(ve, name), **tol)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
@pytest.mark.parametrize("rollout_on", [True, False])
def test_shared_output_leaves_generation_unchanged(deep, family, rollout_on):
    """Recording (the output then comes from the recorder's weights, or SDPA's for deferred layers)
    generates the same tokens as no recording."""
    _, lm = deep(family)
    image = noise_image(seed=3)
    on = capture_attention(lm, image, QUESTION, max_new_tokens=6, vision_rollout=rollout_on)
    off = capture_attention(lm, image, QUESTION, max_new_tokens=6, vision_encoder=False)
    assert on.generated_ids.tolist() == off.generated_ids.tolist()
