"""Vision-encoder attention, reduced on the fly through a second ``AttentionInterface`` function.

:data:`VISION_IMPL` is set on the vision config only. Without a :class:`VisionRecorder` it is SDPA.
While one is active it computes each call's softmax weights in float32,

    A[h, i, j] = softmax_j(q[h, i] · k[h, j] · scale + mask[i, j])        (one attention segment),

folds them into per-layer summaries and, for a float32 tower, returns ``A·V`` from the same weights
as the attention output (SDPA's up to float rounding; other dtypes keep SDPA's output). The full
``[L, H, T, T]`` tensor is kept only on request. Qwen vision towers call the function once per
segment (an image in full-attention blocks, a window in Qwen2.5-VL's windowed blocks); CLIP calls it
once with every image in the batch. Segments arrive in encoder-sequence order, so a cursor over that
sequence places each one.

Per image with ``T`` encoder tokens (patches, plus CLS for CLIP), ``A_l`` its ``[H, T, T]`` weights
at layer ``l`` (zero between tokens of different windows), patches in raster order:

    received[l, h, p]       = (1/T) Σ_i A_l[h, i, p]                    attention patch p receives
    cls_attention[l, h, p]  = A_l[h, cls, p]                            (CLIP only)
    Ã_l                     = rownorm(0.5 · mean_h A_l + 0.5 · I)       (Abnar & Zuidema 2020)
    R_l                     = Ã_l · Ã_{l-1} ··· Ã_0                     rollout through layer l
    rollout_received[l, p]  = (1/T) Σ_i R_l[i, p]
    rollout_cls[l, p]       = R_l[cls, p]                                (CLIP only)
    segment[l, p]           = index of the attention segment holding p at layer l

The rollout is stored for every layer, exactly (float32), without forming ``R_l``: both stored
quantities are row vectors ``x·R_l``, evaluated as a chain of vector–matrix products from the top
layer down once the tower has run (see :class:`VisionRecorder`); no ``T × T`` matrix product is
computed and no ``T × T`` matrix is kept for a segment whose q, k are smaller.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..store import ROLLOUT_RESIDUAL, VisionEncoderAttention
from .capture import CaptureError

VISION_IMPL = "vlmattn_vision"
LAYER_ATTR = "_vlmattn_vision_layer"
# cap on the float32 weights one block of heads and query rows may hold at once (bytes), and a
# smaller one on the CPU, where blocks that stay in cache are faster
_CHUNK_BYTES = 32 * 2**20
_CPU_CHUNK_BYTES = 2 * 2**20

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


def concat_layouts(layouts: list[PatchLayout]) -> PatchLayout:
    """One layout for the images of several samples run through the tower in one call, sample after
    sample (a generation batch): sequence positions and LLM vision-token indices of sample ``b``
    shifted by those of the samples before it."""
    grids, seq_index, image_seq, cls_seq, patch_token, boxes = [], [], [], [], [], []
    seq_off = tok_off = 0
    for lay in layouts:
        grids.append(lay.grids)
        seq_index.append(lay.seq_index + seq_off)
        image_seq.append(lay.image_seq + seq_off)
        cls_seq.append(np.where(lay.cls_seq >= 0, lay.cls_seq + seq_off, -1))
        patch_token.append(np.where(lay.patch_token >= 0, lay.patch_token + tok_off, -1))
        boxes.append(lay.patch_boxes)
        seq_off += int(lay.image_seq[:, 1].max()) if len(lay.image_seq) else 0
        tok_off += int(lay.patch_token.max()) + 1 if (lay.patch_token >= 0).any() else 0
    return PatchLayout(grids=np.concatenate(grids), seq_index=np.concatenate(seq_index),
                       image_seq=np.concatenate(image_seq), cls_seq=np.concatenate(cls_seq),
                       patch_token=np.concatenate(patch_token), patch_boxes=np.concatenate(boxes))


def split_by_sample(ve: VisionEncoderAttention, layouts: list[PatchLayout]) -> list[VisionEncoderAttention]:
    """Per sample, what a :class:`VisionRecorder` over :func:`concat_layouts` ``(layouts)`` recorded for
    that sample's images: the patch axis sliced, each layer's segment ids renumbered from 0 in order
    (as a recording of the sample alone numbers them), the layout fields the sample's own."""
    out, p0, i0 = [], 0, 0
    for lay in layouts:
        n_patches, n_images = int(lay.grids.prod(axis=1).sum()), len(lay.grids)
        part = slice(p0, p0 + n_patches)
        seg = np.stack([np.unique(row, return_inverse=True)[1].reshape(-1) for row in ve.segment[:, part]])
        seg = seg.reshape(ve.segment[:, part].shape).astype(np.int32)
        out.append(VisionEncoderAttention(
            patch_grid=lay.grids.astype(np.int64), patch_spans=lay.patch_spans,
            patch_boxes=lay.patch_boxes.astype(np.float32), patch_token=lay.patch_token.astype(np.int64),
            received=ve.received[:, :, part],
            cls_attention=ve.cls_attention[:, :, part] if ve.cls_attention.shape[-1] else ve.cls_attention,
            rollout_received=ve.rollout_received[:, part] if ve.has_rollout else ve.rollout_received,
            rollout_cls=ve.rollout_cls[:, part] if ve.rollout_cls.shape[-1] else ve.rollout_cls,
            segment=seg, full=ve.full[i0 : i0 + n_images] if ve.full else [],
            has_cls=ve.has_cls, rollout_residual=ve.rollout_residual,
        ))
        p0 += n_patches
        i0 += n_images
    return out


def _blocks(heads: int, length: int, device: torch.device) -> tuple[int, int]:
    """(heads ``g``, query rows ``q``) per block of an ``S``-token segment: ``[g, q, S]`` float32 weights
    within :data:`_CHUNK_BYTES`, or :data:`_CPU_CHUNK_BYTES` on the CPU; more than 8 rows are rounded
    to the nearest multiple of 8, which the matrix products run faster on."""
    cap = _CHUNK_BYTES if device.type != "cpu" else _CPU_CHUNK_BYTES
    row_bytes = 4 * length
    group = max(1, min(heads, cap // row_bytes))
    rows = max(1, cap // (row_bytes * group))
    if rows > 8:
        rows = (rows + 4) // 8 * 8
    return group, min(length, rows)


def _prepare(q: torch.Tensor, k: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous float32 ``q·scale`` ``[H, S, D]`` and ``kᵀ`` ``[H, D, S]`` of one segment, for :func:`_weights`."""
    return (q.float() * scaling).contiguous(), k.float().transpose(-1, -2).contiguous()


def _weights(qs: torch.Tensor, kt: torch.Tensor, mask, hs: slice, r0: int, r1: int,
             scratch: torch.Tensor) -> torch.Tensor:
    """Float32 softmax weights ``[g, r1 − r0, S]`` of heads ``hs`` and query rows ``r0:r1`` of a segment.

    qs, kt from :func:`_prepare`; mask None, bool (True: attend) or additive, ``[1|H, S, S]``.
    ``scratch``: a float32 buffer of at least ``g · (r1 − r0) · S`` values that the weights are
    written to (the scores, then on the CPU the softmax in place over them), instead of new tensors.
    """
    g, n, length = len(range(*hs.indices(qs.shape[0]))), r1 - r0, kt.shape[-1]
    a = torch.bmm(qs[hs, r0:r1], kt[hs], out=scratch.view(-1)[: g * n * length].view(g, n, length))
    if mask is not None:
        m = mask[hs if mask.shape[0] > 1 else slice(None), r0:r1]
        a = a.masked_fill_(~m, float("-inf")) if m.dtype == torch.bool else a.add_(m.float())
    if a.device.type != "cpu":
        return torch.softmax(a, dim=-1)
    return torch.ops.aten._softmax.out(a, -1, False, out=a)  # the CPU kernel reads each row before writing it


def _keeps_mean(length: int, heads: int, dim: int, itemsize: int) -> bool:
    """Whether the rollout keeps a segment's float32 head mean ``[S, S]``: when not larger than its q, k."""
    return 4 * length * length <= 2 * heads * length * dim * itemsize


@dataclass
class _Kept:
    """What the rollout keeps of one segment (encoder tokens ``start …``) of a layer to apply ``Ã``
    again: the head mean ``Ā`` ``[S, S]``, or q, k ``[H, S, D]`` (and the mask), whose weights are
    then computed, once, only when the tower has run."""

    start: int
    mean: torch.Tensor | None = None
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    scaling: float = 1.0


class VisionRecorder:
    """Accumulates the per-layer summaries of one vision-tower forward pass.

    Weights are formed ``[g, q, S]`` at a time (``g`` heads, ``q`` query rows of an ``S``-token
    segment) within :data:`_CHUNK_BYTES` (:data:`_CPU_CHUNK_BYTES` on the CPU, to stay in cache).
    Given ``value``, :meth:`add` returns the attention output ``A·V`` from the same weights, so they
    are computed once.

    Rollout. Softmax rows sum to 1, so ``rownorm`` is the identity up to rounding and
    ``Ã_l = a·I + (1−a)·Ā_l`` (``a`` = 0.5, ``Ā_l = mean_h A_l``, block-diagonal over segments).
    The stored quantities are row vectors ``x·R_l`` for ``x`` = ``(1/T)·1`` and ``e_cls``. Over all
    images at once, ``X`` ``[k, N]`` (``k`` = 1, or 2 with CLS) on the ``N`` encoder tokens, for
    ``n`` layers:

        W_l = X·Ã_l = a·X + (1−a)·[mean_h received_l; mean_h cls_l]
        Y   = W_{n−1};   for l = n−2 … 0:   Y = [W_l; Y·Ã_l]             once layer n−1 has run
        x·R_l = rows k·l … k·l + k − 1 of Y.

    Applying ``Ã_l`` again needs layer ``l``'s weights. A segment of ``S`` tokens keeps its head
    mean ``Ā`` ``[S, S]`` when that is no larger than its q, k ``[H, S, D]`` (windows, short
    sequences). A longer segment of layers ``0 … n−2`` keeps q, k instead and is deferred: the
    tower gets SDPA's output for it, and its weights are computed once, in the sweep above, for
    ``Y·Ã_l``, ``received``, ``cls_attention`` and ``full`` together. Cost: one extra weight
    computation for each long segment of layers ``0 … n−2`` (beside SDPA's) and about ``k·n²/2``
    vector–matrix products (``S²`` multiply-adds per segment); no ``T × T`` matrix product.
    Memory: ``min(S², 2·H·S·D)`` values per segment of layers ``0 … n−2`` (q, k in the tower's
    dtype), ``O(n·H·N)`` for the rest, and ``n·H·T²`` only when ``store_full``.
    """

    def __init__(self, layout: PatchLayout, n_layers: int, store_full: bool = False, rollout: bool = True):
        self.layout = layout
        self.n_layers = n_layers
        self.store_full = store_full
        self.rollout = rollout
        self.total = int(layout.image_seq[:, 1].max())
        self.orders = [torch.as_tensor(layout.image_order(i)) for i in range(len(layout.grids))]
        #: per image, the encoder-sequence positions of its patches in raster order (CLS left out)
        self.patches = [order[(1 if layout.cls_seq[i] >= 0 else 0):] + int(layout.image_seq[i, 0])
                        for i, order in enumerate(self.orders)]
        self._patches_on: dict[torch.device, list[torch.Tensor]] = {}
        self._seq_image = np.full(self.total, -1, np.int64)
        for i, (s, e) in enumerate(layout.image_seq):
            self._seq_image[s:e] = i
        self.layer = 0
        self.cursor = 0
        self.n_segments = 0
        self.out: dict[str, list] = {k: [] for k in ("received", "cls", "roll_recv", "roll_cls", "segment", "full")}
        self._layers: list[dict] = []  # with the rollout: every layer's state until the tower has run
        self._layer_state = None

    def _device_patches(self, device: torch.device) -> list[torch.Tensor]:
        """:attr:`patches` on ``device`` (copied there once)."""
        if device not in self._patches_on:
            self._patches_on[device] = [p.to(device) for p in self.patches]
        return self._patches_on[device]

    def _x(self, device) -> torch.Tensor:
        """``X`` ``[k, N]``: ``1/T_i`` on image ``i``'s tokens, and (with CLS) 1 at each CLS token."""
        x = torch.zeros(2 if self.layout.has_cls else 1, self.total, device=device)
        for i, (s, e) in enumerate(self.layout.image_seq):
            x[0, s:e] = 1.0 / (e - s)
            if self.layout.cls_seq[i] >= 0:
                x[1, int(self.layout.cls_seq[i])] = 1.0
        return x

    # -- per call ---------------------------------------------------------------------------------
    def _start_layer(self, heads: int, device) -> None:
        T = [int(e - s) for s, e in self.layout.image_seq]
        self._layer_state = {
            "recv": torch.zeros(heads, self.total, device=device),  # Σ_i A[h, i, j], encoder order
            "cls": torch.zeros(heads, self.total, device=device),
            "kept": [],
            "full": [torch.zeros(heads, t, t, device=device) for t in T] if self.store_full else None,
            "segment": torch.full((self.total,), -1, dtype=torch.long),
        }

    def add(self, layer: int, query: torch.Tensor, key: torch.Tensor, mask, scaling: float,
            value: torch.Tensor | None = None) -> torch.Tensor | None:
        """Fold one call's weights in. query/key/value ``[B, H, S, D]``, each batch element one segment.

        Returns the attention output ``[B, S, H, D]`` (``A·V`` in float32; ``value`` must be
        float32) when ``value`` is given and the call is not deferred, else None.
        """
        if layer != self.layer:
            raise CaptureError(f"vision layer {layer} attended while layer {self.layer} was incomplete")
        heads, length, dim = query.shape[1], query.shape[2], query.shape[3]
        if self._layer_state is None:
            self._start_layer(heads, query.device)
        st = self._layer_state
        keep = self.rollout and self.layer < self.n_layers - 1  # the last layer is never applied again
        keep_mean = keep and _keeps_mean(length, heads, dim, query.element_size())
        defer = keep and not keep_mean  # weights computed once, in the sweep after the last layer
        out = None
        if value is not None and not defer:
            out = torch.empty(query.shape[0], length, heads, value.shape[-1], device=query.device)
        for b in range(query.shape[0]):
            s0 = self.cursor
            m_b = None if mask is None else mask[b if mask.shape[0] > 1 else 0]
            if defer:
                st["kept"].append(_Kept(s0, q=query[b].clone(), k=key[b].clone(), mask=m_b, scaling=scaling))
            else:
                mean = None
                if keep_mean:
                    mean = torch.zeros(length, length, device=query.device)
                    st["kept"].append(_Kept(s0, mean=mean))
                qs, kt = _prepare(query[b], key[b], scaling)
                v_b = value[b].float().contiguous() if out is not None else None
                for r0, r1, hs, a in self._segment_weights(qs, kt, m_b):
                    self._fold(st, s0, r0, r1, hs, a)
                    if mean is not None:
                        mean[r0:r1] += a.sum(dim=0).div_(heads)
                    if out is not None:
                        out[b, r0:r1, hs] = torch.matmul(a, v_b[hs]).transpose(0, 1)
            st["segment"][s0 : s0 + length] = self.n_segments
            self.n_segments += 1
            self.cursor += length
        if self.cursor == self.total:
            self._end_layer()
        elif self.cursor > self.total:
            raise CaptureError(f"vision layer {layer} attended over {self.cursor} tokens, expected {self.total}")
        return out

    @staticmethod
    def _segment_weights(qs: torch.Tensor, kt: torch.Tensor, mask):
        """Yield ``(r0, r1, hs, A[hs, r0:r1, :])`` over a segment's blocks, all heads of a row block in
        turn. Each block is written over the previous one's memory: use it before the next."""
        heads, length = qs.shape[0], qs.shape[1]
        group, rows = _blocks(heads, length, qs.device)
        scratch = torch.empty(group * rows * length, device=qs.device)
        for r0 in range(0, length, rows):
            r1 = min(length, r0 + rows)
            for h0 in range(0, heads, group):
                hs = slice(h0, min(heads, h0 + group))
                yield r0, r1, hs, _weights(qs, kt, mask, hs, r0, r1, scratch)

    def _fold(self, st: dict, s0: int, r0: int, r1: int, hs: slice, a: torch.Tensor) -> None:
        """Add weights ``a`` ``[g, q, S]`` (rows ``r0:r1`` of the segment at ``s0``) to the sums."""
        length = a.shape[-1]
        st["recv"][hs, s0 : s0 + length] += a.sum(dim=1)
        img = int(self._seq_image[s0])
        cls = int(self.layout.cls_seq[img])
        if s0 + r0 <= cls < s0 + r1:
            st["cls"][hs, s0 : s0 + length] = a[:, cls - s0 - r0]
        if st["full"] is not None:
            i0 = s0 - int(self.layout.image_seq[img, 0])
            st["full"][img][hs, i0 + r0 : i0 + r1, i0 : i0 + length] = a

    def _end_layer(self) -> None:
        st = self._layer_state
        self.layer += 1
        self.cursor = 0
        self.n_segments = 0
        self._layer_state = None
        if not self.rollout:
            self._finish_layer(st)
            return
        self._layers.append(st)
        if self.layer == self.n_layers:
            self._finish_rollout()

    # -- rollout ----------------------------------------------------------------------------------
    @staticmethod
    def _w(st: dict, x: torch.Tensor) -> torch.Tensor:
        """``W_l = X·Ã_l`` ``[k, N]`` (``x``: :meth:`_x`): row 0 from the received sums (X's row is
        ``1/T_i`` there), row 1 from the CLS rows."""
        a = ROLLOUT_RESIDUAL
        w = x * a
        w[0] += (1 - a) * st["recv"].mean(dim=0) * x[0]
        if w.shape[0] > 1:
            w[1] += (1 - a) * st["cls"].mean(dim=0)
        return w

    def _apply(self, y: torch.Tensor, st: dict) -> torch.Tensor:
        """``y·Ã_l = a·y + (1−a)·y·Ā_l`` for row vectors ``y`` ``[m, N]``, from what layer ``l`` kept;
        deferred segments' weights are computed here and folded into the layer's sums as well."""
        a = ROLLOUT_RESIDUAL
        out = y * a
        for kp in st["kept"]:
            if kp.mean is not None:
                seg = slice(kp.start, kp.start + kp.mean.shape[0])
                out[:, seg].addmm_(y[:, seg], kp.mean, alpha=1 - a)
                continue
            heads, length = kp.q.shape[0], kp.q.shape[1]
            acc = torch.zeros(y.shape[0], length, device=y.device)
            for r0, r1, hs, w in self._segment_weights(*_prepare(kp.q, kp.k, kp.scaling), kp.mask):
                self._fold(st, kp.start, r0, r1, hs, w)
                acc += torch.matmul(y[:, kp.start + r0 : kp.start + r1], w).sum(dim=0)  # Σ_h y[rows]·A_h[rows, :]
            out[:, kp.start : kp.start + length].add_(acc, alpha=(1 - a) / heads)
        st["kept"] = []  # free q, k and means as the sweep goes
        return out

    def _finish_rollout(self) -> None:
        """After the last layer: the sweep from the top layer down, then every layer's summaries."""
        x = self._x(self._layers[-1]["recv"].device)
        y = self._w(self._layers[-1], x)
        for st in reversed(self._layers[:-1]):
            y = self._apply(y, st)
            y = torch.cat([self._w(st, x), y])
        k = y.shape[0] // self.n_layers
        for layer, st in enumerate(self._layers):
            self._finish_layer(st)
            rows = y[k * layer : k * (layer + 1)]
            recv, cls = [], []
            for i, patches in enumerate(self._device_patches(y.device)):
                recv.append(rows[0, patches])
                cls.append(rows[1, patches] if self.layout.cls_seq[i] >= 0 else rows.new_zeros(0))
            self.out["roll_recv"].append(torch.cat(recv).cpu())
            self.out["roll_cls"].append(torch.cat(cls).cpu())
        self._layers = []

    def _finish_layer(self, st: dict) -> None:
        """Map one layer's sums to patch order and append them to :attr:`out`."""
        lay = self.layout
        recv, cls_rows, seg = [], [], []
        device = st["recv"].device
        for i, patches in enumerate(self._device_patches(device)):
            s0, s1 = (int(v) for v in lay.image_seq[i])
            recv.append(st["recv"][:, patches] / (s1 - s0))
            cls_rows.append(st["cls"][:, patches])
            seg.append(st["segment"][self.patches[i]])
            if st["full"] is not None:
                o = self.orders[i].to(device)
                self.out["full"].append((i, st["full"][i][:, o][:, :, o].cpu()))
        out = self.out
        out["received"].append(torch.cat(recv, dim=1).cpu())
        out["cls"].append(torch.cat(cls_rows, dim=1).cpu())
        out["segment"].append(torch.cat(seg))

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
    """``AttentionInterface`` function for vision towers: SDPA's output, summaries when recording.

    While recording a float32 tower without grad, dropout or causal masking, the output is ``A·V``
    from the recorder's own weights (SDPA's up to float rounding) instead of a second SDPA call.
    """
    recorder = _ACTIVE.get()
    if recorder is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    layer = getattr(module, LAYER_ATTR, None)
    if layer is None:
        raise CaptureError(f"vision attention module {type(module).__name__} has no layer index")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    causal = kwargs.get("is_causal")
    causal = causal if causal is not None else getattr(module, "is_causal", False)
    shared = (
        query.dtype == torch.float32 and value.dtype == torch.float32 and not dropout and not causal
        and not torch.is_grad_enabled() and key.shape[1] == query.shape[1] and kwargs.get("position_bias") is None
    )
    out = recorder.add(layer, query.detach(), key.detach(), attention_mask, scale, value if shared else None)
    if out is None:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                        **kwargs)
    return out, None


def instrument(modules: list[torch.nn.Module]) -> None:
    """Number the vision attention modules (layer order) so the recorder can tell layers apart."""
    for i, m in enumerate(modules):
        setattr(m, LAYER_ATTR, i)


@functools.cache
def register() -> str:
    """Register the vision function and its mask builder (SDPA's) under :data:`VISION_IMPL`, once, on
    first use (:func:`vlmattn.engine.inference.load_model`); importing this module registers nothing."""
    AttentionInterface.register(VISION_IMPL, vision_attention_forward)
    AttentionMaskInterface.register(VISION_IMPL, sdpa_mask)
    return VISION_IMPL

