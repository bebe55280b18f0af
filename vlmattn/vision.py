"""Vision-encoder attention, reduced on the fly through a second ``AttentionInterface`` function.

:data:`VISION_IMPL` is set on the vision config only. It returns SDPA's output and, while a
:class:`VisionRecorder` is active, computes each call's softmax weights in float32,

    A[h, i, j] = softmax_j(q[h, i] · k[h, j] · scale + mask[i, j])        (one attention segment),

and folds them into per-layer summaries; the full ``[L, H, T, T]`` tensor is kept only on request.
Qwen vision towers call the function once per segment (an image in full-attention blocks, a window
in Qwen2.5-VL's windowed blocks); CLIP calls it once with every image in the batch. Segments arrive
in encoder-sequence order, so a cursor over that sequence places each one.

Per image with ``T`` encoder tokens (patches, plus CLS for CLIP), ``A_l`` its ``[H, T, T]`` weights
at layer ``l`` (zero between tokens of different windows), patches in raster order:

    received[l, h, p]       = (1/T) Σ_i A_l[h, i, p]                    attention patch p receives
    cls_attention[l, h, p]  = A_l[h, cls, p]                            (CLIP only)
    Ã_l                     = rownorm(0.5 · mean_h A_l + 0.5 · I)       (Abnar & Zuidema 2020)
    R_l                     = Ã_l · Ã_{l-1} ··· Ã_0                     rollout through layer l
    rollout_received[l, p]  = (1/T) Σ_i R_l[i, p]
    rollout_cls[l, p]       = R_l[cls, p]                                (CLIP only)
    segment[l, p]           = index of the attention segment holding p at layer l
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .capture import CaptureError
from .store import ROLLOUT_RESIDUAL, VisionEncoderAttention

VISION_IMPL = "vlmattn_vision"
LAYER_ATTR = "_vlmattn_vision_layer"
# cap on the float32 scores one head group may hold at once (bytes)
_CHUNK_BYTES = 32 * 2**20

_ACTIVE: contextvars.ContextVar[VisionRecorder | None] = contextvars.ContextVar("vlmattn_vision_recorder", default=None)


@dataclass
class PatchLayout:
    """How the encoder's token sequence maps onto image patches (images concatenated, ``P`` patches).

    grids ``[I, 2]``: (rows, cols) of each image's patch grid; patches run row-major per image.
    seq_index ``[P]``: each patch's position in the encoder sequence (all images, in call order).
    image_seq ``[I, 2]``: (start, end) of each image's tokens in the encoder sequence.
    cls_seq ``[I]``: sequence position of each image's CLS token, -1 if none.
    patch_token ``[P]``: index into the LLM's vision tokens (``/vision/token_boxes``) of the token
    each patch feeds, -1 if none.
    patch_boxes ``[P, 4]``: each patch's pixel box (x0, y0, x1, y1) in the original image.
    """

    grids: np.ndarray
    seq_index: np.ndarray
    image_seq: np.ndarray
    cls_seq: np.ndarray
    patch_token: np.ndarray
    patch_boxes: np.ndarray

    @property
    def patch_spans(self) -> np.ndarray:
        """``[I, 2]`` (start, end) of each image's patches along the patch axis."""
        ends = np.cumsum(self.grids.prod(axis=1))
        return np.stack([ends - self.grids.prod(axis=1), ends], axis=1).astype(np.int64)

    @property
    def has_cls(self) -> bool:
        return bool((self.cls_seq >= 0).any())

    def image_order(self, i: int) -> np.ndarray:
        """Local sequence positions of image ``i``'s tokens: CLS first (if any), then patches raster."""
        s0 = int(self.image_seq[i, 0])
        a, b = self.patch_spans[i]
        cls = [int(self.cls_seq[i]) - s0] if self.cls_seq[i] >= 0 else []
        return np.concatenate([np.asarray(cls, np.int64), self.seq_index[a:b] - s0])


class VisionRecorder:
    """Accumulates the per-layer summaries of one vision-tower forward pass.

    Weights are formed ``[g, q, L]`` at a time (``g`` heads, ``q`` query rows of an ``L``-token
    segment) within :data:`_CHUNK_BYTES`. The rollout is kept per image as ``R`` ``[T, T]`` in
    encoder order and advanced without forming ``mean_h A``: for query rows ``Q`` of a segment with
    keys ``K``, ``R'[Q] = (a·R[Q] + (1−a)·Ā[Q, K]·R[K]) / (a + (1−a)·Σ_K Ā[Q, K])``, where the
    denominator is ``rownorm``'s (1 up to rounding). Memory: ``2·T²`` floats per image for the
    rollout, ``O(H·S)`` for the rest, plus ``L·H·T²`` only when ``store_full``.
    """

    def __init__(self, layout: PatchLayout, n_layers: int, store_full: bool = False, rollout: bool = True):
        self.layout = layout
        self.n_layers = n_layers
        self.store_full = store_full
        self.rollout = rollout
        self.total = int(layout.image_seq[:, 1].max())
        self.orders = [torch.as_tensor(layout.image_order(i)) for i in range(len(layout.grids))]
        self._seq_image = np.full(self.total, -1, np.int64)
        for i, (s, e) in enumerate(layout.image_seq):
            self._seq_image[s:e] = i
        self.layer = 0
        self.cursor = 0
        self.n_segments = 0
        self.out: dict[str, list] = {k: [] for k in ("received", "cls", "roll_recv", "roll_cls", "segment", "full")}
        self._rollout: list[torch.Tensor | None] = [None] * len(layout.grids)
        self._spare: list[torch.Tensor | None] = [None] * len(layout.grids)
        self._layer_state = None

    # -- per call ---------------------------------------------------------------------------------
    def _start_layer(self, heads: int, device) -> None:
        T = [int(e - s) for s, e in self.layout.image_seq]
        self._layer_state = {
            "recv": torch.zeros(heads, self.total, device=device),
            "cls": torch.zeros(heads, self.total, device=device),
            "rollout": [
                sp if sp is not None else torch.empty(t, t, device=device) for sp, t in zip(self._spare, T)
            ] if self.rollout else None,
            "full": [torch.zeros(heads, t, t, device=device) for t in T] if self.store_full else None,
            "segment": torch.full((self.total,), -1, dtype=torch.long),
        }

    def add(self, layer: int, query: torch.Tensor, key: torch.Tensor, mask, scaling: float) -> None:
        """Fold one call's weights in. query/key ``[B, H, L, D]``, each batch element one segment."""
        if layer != self.layer:
            raise CaptureError(f"vision layer {layer} attended while layer {self.layer} was incomplete")
        heads, length = query.shape[1], query.shape[2]
        if self._layer_state is None:
            self._start_layer(heads, query.device)
        st = self._layer_state
        row_bytes = 4 * length
        group = max(1, min(heads, _CHUNK_BYTES // max(1, row_bytes * length)))
        rows = max(1, min(length, _CHUNK_BYTES // max(1, row_bytes * group)))
        a_res = ROLLOUT_RESIDUAL
        for b in range(query.shape[0]):
            s0 = self.cursor
            img = int(self._seq_image[s0])
            i0 = s0 - int(self.layout.image_seq[img, 0])
            cls = int(self.layout.cls_seq[img])
            prev = self._rollout[img]
            new = st["rollout"][img] if self.rollout else None
            k_b = key[b].float()
            m_b = None if mask is None else mask[b if mask.shape[0] > 1 else 0]
            for r0 in range(0, length, rows):
                r1 = min(length, r0 + rows)
                mean = torch.zeros(r1 - r0, length, device=query.device) if new is not None else None
                for h0 in range(0, heads, group):
                    q = query[b, h0 : h0 + group, r0:r1].float()
                    a = torch.matmul(q, k_b[h0 : h0 + group].transpose(-1, -2)).mul_(scaling)
                    if m_b is not None:
                        m = m_b[:, r0:r1]
                        a = a.masked_fill_(~m, float("-inf")) if m.dtype == torch.bool else a.add_(m.float())
                    a = torch.softmax(a, dim=-1)  # [g, q, L]
                    hs = slice(h0, h0 + a.shape[0])
                    st["recv"][hs, s0 : s0 + length] += a.sum(dim=1)
                    if s0 + r0 <= cls < s0 + r1:
                        st["cls"][hs, s0 : s0 + length] = a[:, cls - s0 - r0]
                    if mean is not None:
                        mean += a.sum(dim=0).div_(heads)
                    if st["full"] is not None:
                        st["full"][img][hs, i0 + r0 : i0 + r1, i0 : i0 + length] = a
                if new is None:
                    continue
                norm = a_res + (1 - a_res) * mean.sum(dim=-1, keepdim=True)
                q_rows = slice(i0 + r0, i0 + r1)
                if prev is None:  # R before the first layer is the identity
                    block = (1 - a_res) * mean
                    out = torch.zeros(r1 - r0, new.shape[1], device=new.device)
                    out[:, i0 : i0 + length] = block
                    out[torch.arange(r1 - r0), torch.arange(i0 + r0, i0 + r1)] += a_res
                else:
                    out = a_res * prev[q_rows] + (1 - a_res) * (mean @ prev[i0 : i0 + length])
                new[q_rows] = out / norm
            st["segment"][s0 : s0 + length] = self.n_segments
            self.n_segments += 1
            self.cursor += length
        if self.cursor == self.total:
            self._finish_layer()
        elif self.cursor > self.total:
            raise CaptureError(f"vision layer {layer} attended over {self.cursor} tokens, expected {self.total}")

    def _finish_layer(self) -> None:
        st, lay = self._layer_state, self.layout
        recv, cls_rows, roll_recv, roll_cls, seg = [], [], [], [], []
        for i, order in enumerate(self.orders):
            s0, s1 = (int(v) for v in lay.image_seq[i])
            t = s1 - s0
            n_cls = 1 if lay.cls_seq[i] >= 0 else 0
            o = order.to(st["recv"].device)
            patches = o[n_cls:] + s0
            recv.append(st["recv"][:, patches] / t)
            cls_rows.append(st["cls"][:, patches])
            seg.append(st["segment"][patches.cpu()])
            if self.rollout:
                # swap buffers: this layer's rollout becomes the previous one, the old one is reused
                r = st["rollout"][i]
                self._spare[i], self._rollout[i] = self._rollout[i], r
                roll_recv.append(r.mean(dim=0)[o[n_cls:]])
                roll_cls.append(r[o[0], o[n_cls:]] if n_cls else r.new_zeros(0))
            if st["full"] is not None:
                self.out["full"].append((i, st["full"][i][:, o][:, :, o].cpu()))
        out = self.out
        out["received"].append(torch.cat(recv, dim=1).cpu())
        out["cls"].append(torch.cat(cls_rows, dim=1).cpu())
        if self.rollout:
            out["roll_recv"].append(torch.cat(roll_recv).cpu())
            out["roll_cls"].append(torch.cat(roll_cls).cpu())
        out["segment"].append(torch.cat(seg))
        self.layer += 1
        self.cursor = 0
        self.n_segments = 0
        self._layer_state = None

    # -- result -----------------------------------------------------------------------------------
    def result(self) -> VisionEncoderAttention:
        """The summaries after the vision tower ran; raises if it did not run every layer."""
        if self.layer != self.n_layers:
            raise CaptureError(f"vision encoder recorded {self.layer} of {self.n_layers} layers")
        lay, out = self.layout, self.out
        has_cls = lay.has_cls
        received = torch.stack(out["received"]).numpy()
        full = []
        if self.store_full:
            for i in range(len(lay.grids)):
                full.append(torch.stack([a for j, a in out["full"] if j == i]).numpy())
        return VisionEncoderAttention(
            patch_grid=lay.grids.astype(np.int64),
            patch_spans=lay.patch_spans,
            patch_boxes=lay.patch_boxes.astype(np.float32),
            patch_token=lay.patch_token.astype(np.int64),
            received=received,
            cls_attention=torch.stack(out["cls"]).numpy() if has_cls else received[:, :, :0],
            rollout_received=(
                torch.stack(out["roll_recv"]).numpy() if self.rollout else np.zeros((self.n_layers, 0), np.float32)
            ),
            rollout_cls=(
                torch.stack(out["roll_cls"]).numpy()
                if self.rollout and has_cls
                else np.zeros((self.n_layers, 0), np.float32)
            ),
            segment=torch.stack(out["segment"]).numpy().astype(np.int32),
            full=full,
            has_cls=has_cls,
        )


@contextlib.contextmanager
def recording(recorder: VisionRecorder | None):
    """Activate ``recorder`` (or nothing, for ``None``) for vision attention calls in the block."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def vision_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``AttentionInterface`` function for vision towers: SDPA output, summaries when recording."""
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    recorder = _ACTIVE.get()
    if recorder is not None:
        layer = getattr(module, LAYER_ATTR, None)
        if layer is None:
            raise CaptureError(f"vision attention module {type(module).__name__} has no layer index")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        recorder.add(layer, query.detach(), key.detach(), attention_mask, scale)
    return out, None


def instrument(modules: list[torch.nn.Module]) -> None:
    """Number the vision attention modules (layer order) so the recorder can tell layers apart."""
    for i, m in enumerate(modules):
        setattr(m, LAYER_ATTR, i)


def register() -> str:
    AttentionInterface.register(VISION_IMPL, vision_attention_forward)
    AttentionMaskInterface.register(VISION_IMPL, sdpa_mask)
    return VISION_IMPL


register()
