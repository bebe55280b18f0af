"""The HDF5 attention cache, schema v3: one file per (model, image, question).

Layout (documented field by field in ``docs/hdf5-schema.md``)::

    /                       attrs: schema_version, model_id, model_path, family, dtype, seed,
                            torch_version, transformers_version, vlmattn_version, settings_hash,
                            settings_json, image_id, image_path, question_id, question, generated_text
    /tokens/input_ids       [N]      int64      prompt token ids
    /tokens/input_tokens    [N]      str        their token strings
    /tokens/generated_ids   [T]      int64
    /tokens/generated_tokens[T]      str
    /tokens/generated_special[T]     bool       (optional) the generated id is a special token of the tokenizer
    /vision/spans           [S, 2]   int64      (start, end) runs of vision-token positions in the prompt
    /vision/grid            [P, 2]   int64      (rows, cols) per piece, tokens row-major
    /vision/piece_image     [P]      int64      image of each piece (v3; older files: one piece an image)
    /vision/piece_kind      [P]      str        what each piece is (v3; older files: "image")
    /vision/token_boxes     [V, 4]   float32    pixel box of each vision token in the original image
    /vision/cls_positions   [I]      int64      prompt position of an image's CLS token (LLaVA "full"
                                                strategy; outside the spans, no box), -1 if none
    /vision/marker_positions [E]     int64      other box-less image tokens (v3): newline, tile markers…
    /vision/marker_kind     [E]      str        their kinds (vlmattn.engine.adapters.base.MARKER_KINDS)
    /image/size             [2]      int64      (width, height)
    /image/boxes            [O, 4]   float32    ground-truth object boxes (may be empty)
    /image/labels, /image/colours [O] str
    /attention              attrs: layout ("full" or "compact", extraction.layout)
    /attention/decode       [T, L, H, K] f16|f32 full layout: row of the query predicting generated token t
                            (rows on absolute key positions: keys outside a sliding window are 0)
    /attention/decode_vision [T, L, H, V] f16|f32 compact layout: the rows' vision-token columns
    /attention/decode_segments [T, L, H, S] float64 compact layout: the rows' sums over the other key
                            segments (DECODE_SEGMENTS: cls, text_before, text_after, generated, markers;
                            v2 files hold the first four, markers read as 0)
    /attention/decode_key_len [T]    int64      valid keys of row t (N + t); the rest is 0
    /attention/prefill      [L', H, R, N] f16|f32 prefill rows for prompt positions below, at the layers
                            below (L' = L unless extraction.prefill_layers names fewer)
    /attention/prefill_positions [R] int64
    /attention/prefill_layers [L'] int64       0-based decoder layers of the prefill rows, ascending
                            (arange(L) when all; files written without it hold every layer)
    /attention/rollout_decode [T, K] float32   (optional, extraction.llm_rollout) language-model rollout
                            row R_L[N−1+t, :] of the query predicting token t, keys as in decode
                            (K = N + T − 1, zero past the row's own position), see vlmattn.engine.capture
    /attention/rollout_prefill [R, N] float32  (optional) rollout rows R_L[p, :N] of prefill_positions
    /vision_encoder/...     (optional) per-patch vision-encoder attention, see vlmattn.engine.vision:
        patch_grid [I, 2], patch_spans [I, 2], patch_boxes [P, 4], patch_token [P],
        received [L, H, P], cls_attention [L, H, P|0], rollout_received [L, P],
        rollout_cls [L, P|0], segment [L, P], full/image_{i} [L, H, T_i, T_i] (on request)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .errors import InputError, SchemaVersionError
from .layout import check_layout, image_positions, span_positions
from .tables import atomic_target

SCHEMA_VERSION = 3
#: versions :func:`read_sample` reads: 1 (full layout only, no ``layout`` attribute), 2 (one grid an
#: image, no markers) and 3 (pieces and markers)
READ_VERSIONS = (1, 2, 3)
LAYOUTS = ("full", "compact")
#: key segments of a decode row besides the vision tokens, summed in the compact layout (and what
#: :func:`decode_segment_sums` computes from full rows), in the order of ``decode_segments``' last axis
DECODE_SEGMENTS = ("cls", "text_before", "text_after", "generated", "markers")
#: the segments of version-2 files (no markers)
DECODE_SEGMENTS_V2 = DECODE_SEGMENTS[:4]
ROLLOUT_RESIDUAL = 0.5  # residual weight a of the vision-encoder rollout: 0.5·Ā + 0.5·I
_STR = h5py.string_dtype("utf-8")


@dataclass
class VisionEncoderAttention:
    """What is stored under ``/vision_encoder`` (see the module docstring for the formulas).

    received ``[L, H, P]``, cls_attention ``[L, H, P]`` (empty ``[L, H, 0]`` without CLS),
    rollout_received ``[L, P]``, rollout_cls ``[L, P]`` (``[L, 0]`` without CLS; both ``[L, 0]`` with
    the rollout switched off), segment ``[L, P]``;
    full: per image ``[L, H, T_i, T_i]`` in :meth:`PatchLayout.image_order` (only on request).
    """

    patch_grid: np.ndarray
    patch_spans: np.ndarray
    patch_boxes: np.ndarray
    patch_token: np.ndarray
    received: np.ndarray
    cls_attention: np.ndarray
    rollout_received: np.ndarray
    rollout_cls: np.ndarray
    segment: np.ndarray
    full: list[np.ndarray] = field(default_factory=list)
    has_cls: bool = False
    rollout_residual: float = ROLLOUT_RESIDUAL

    @property
    def has_rollout(self) -> bool:
        """False when the rollout was switched off (its datasets are then ``[L, 0]``)."""
        return self.rollout_received.shape[-1] > 0


@dataclass
class AttentionSample:
    """Everything cached for one sample; arrays as in the module docstring.

    ``rollout_decode [T, N + T − 1]`` and ``rollout_prefill [R, N]`` (float32) are None unless the
    language-model rollout was extracted (``extraction.llm_rollout``).

    ``generated_special [T]`` (bool) marks the generated ids that are special tokens of the tokenizer
    (``all_special_ids``); None, for files written before the dataset existed, marks none.

    ``prefill [L', H, R, N]`` holds the rows at the decoder layers ``prefill_layers [L']`` (int64,
    ascending; :func:`prefill_at` picks one). None, for a sample built without it, means every layer:
    ``arange(L)`` (what :func:`read_sample` returns for files written before the dataset existed).

    Decode rows come in one of two layouts. Full: ``decode [T, L, H, N + T − 1]``, every key. Compact
    (``decode`` None): ``compact_vision [T, L, H, V]``, the vision-token columns, and
    ``compact_segments [T, L, H, S]`` (float64), the rows' sums over :data:`DECODE_SEGMENTS`. Readers
    use :attr:`decode_vision` and :attr:`decode_segments`, which give the same arrays from either.
    """

    input_ids: np.ndarray
    input_tokens: list[str]
    generated_ids: np.ndarray
    generated_tokens: list[str]
    spans: np.ndarray
    grid: np.ndarray
    token_boxes: np.ndarray
    image_size: np.ndarray
    decode: np.ndarray | None
    decode_key_len: np.ndarray
    prefill: np.ndarray
    prefill_positions: np.ndarray
    attrs: dict = field(default_factory=dict)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)
    vision_encoder: VisionEncoderAttention | None = None
    cls_positions: np.ndarray | None = None
    rollout_decode: np.ndarray | None = None
    rollout_prefill: np.ndarray | None = None
    prefill_layers: np.ndarray | None = None
    compact_vision: np.ndarray | None = None
    compact_segments: np.ndarray | None = None
    generated_special: np.ndarray | None = None
    piece_image: np.ndarray | None = None
    piece_kinds: list[str] | None = None
    marker_positions: np.ndarray | None = None
    marker_kinds: list[str] | None = None

    def __post_init__(self):
        n_pieces = len(np.asarray(self.grid).reshape(-1, 2))
        if self.piece_image is None:
            self.piece_image = np.arange(n_pieces, dtype=np.int64)
        if self.piece_kinds is None:
            self.piece_kinds = ["image"] * n_pieces
        if self.cls_positions is None:
            self.cls_positions = np.full(self.n_images, -1, np.int64)
        if self.marker_positions is None:
            self.marker_positions = np.zeros(0, np.int64)
        if self.marker_kinds is None:
            self.marker_kinds = []
        if (self.decode is None) == (self.compact_vision is None) or (
                (self.compact_vision is None) != (self.compact_segments is None)):
            raise ValueError("a sample holds its decode rows either in full (decode) or compact "
                             "(compact_vision and compact_segments)")

    @property
    def n_images(self) -> int:
        """Images in the prompt: ``max(piece_image) + 1`` (0 without vision tokens)."""
        return int(np.max(self.piece_image)) + 1 if len(self.piece_image) else 0

    @property
    def n_pieces(self) -> int:
        return len(self.piece_image)

    @property
    def image_positions(self) -> np.ndarray:
        """``[V + n_cls + E]`` sorted: every prompt position holding an image token (vision tokens, CLS
        tokens and the other box-less image tokens, ``marker_positions``)."""
        return image_positions(self.vision_index, self.cls_positions, self.marker_positions)

    @property
    def layout(self) -> str:
        """``"full"`` or ``"compact"``: how the decode rows are held."""
        return "full" if self.decode is not None else "compact"

    @property
    def decode_vision(self) -> np.ndarray:
        """``[T, L, H, V]``: the decode rows' columns of the vision tokens (:attr:`vision_index`)."""
        if self.decode is None:
            return self.compact_vision
        # C order, as read from a compact file: reductions over it then add in the same order
        return np.ascontiguousarray(self.decode[..., self.vision_index])

    @property
    def decode_segments(self) -> np.ndarray:
        """``[T, L, H, S]`` float64: the decode rows' sums over the :data:`DECODE_SEGMENTS`
        (:func:`decode_segment_sums`)."""
        if self.decode is None:
            return self.compact_segments
        return decode_segment_sums(self.decode, len(self.input_ids), self.vision_index, self.cls_positions,
                                   self.decode_key_len, self.marker_positions)

    @property
    def n_layers(self) -> int:
        return int((self.decode if self.decode is not None else self.compact_vision).shape[1])

    @property
    def n_heads(self) -> int:
        return int((self.decode if self.decode is not None else self.compact_vision).shape[2])

    @property
    def stored_prefill_layers(self) -> np.ndarray:
        """``prefill_layers``, or ``arange(L)`` when it is None, ``[L']`` int64."""
        if self.prefill_layers is None:
            return np.arange(self.n_layers, dtype=np.int64)
        return np.asarray(self.prefill_layers, np.int64)

    @property
    def vision_index(self) -> np.ndarray:
        """Prompt positions of all vision tokens, ``[V]``, in span order (a CLS token is not among them)."""
        return span_positions(self.spans)

    @property
    def n_steps(self) -> int:
        return int(len(self.decode_key_len))

    @property
    def token_centres(self) -> np.ndarray:
        """Centre of each vision token in [0, 1] image coordinates, ``[V, 2]`` (x, y)."""
        b = self.token_boxes
        w, h = self.image_size
        return np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h], axis=1)


def decode_segment_sums(decode: np.ndarray, n_prompt: int, vision_index: np.ndarray, cls_positions: np.ndarray,
                        key_len: np.ndarray, marker_positions: np.ndarray) -> np.ndarray:
    """Sums of decode rows ``decode [T, L, H, K]`` over the key segments :data:`DECODE_SEGMENTS`,
    ``[T, L, H, S]`` float64. With ``N = n_prompt`` prompt tokens, image tokens = ``vision_index [V]`` ∪
    the CLS positions ``cls_positions [I]`` (``-1``: none) ∪ ``marker_positions [E]`` (the other
    box-less image tokens), ``f`` = the first image token (``N`` if none):

        cls          Σ over the CLS positions
        text_before  Σ over prompt keys k < f that are not image tokens (system prompt)
        text_after   Σ over prompt keys f ≤ k < N that are not image tokens (the question)
        generated    Σ over N ≤ k < key_len[t] (generated tokens; ``key_len [T]``)
        markers      Σ over the marker positions

    With the vision tokens' sum these partition every row (keys past ``key_len[t]`` are 0). Each sum
    reads its own keys only, converted to float64 column by column (not the whole rows at once).
    """
    a = decode
    cls = np.asarray(cls_positions, np.int64)
    cls = cls[cls >= 0]
    markers = np.asarray(marker_positions, np.int64)
    image = np.union1d(np.union1d(vision_index, cls), markers)
    pos = np.arange(a.shape[-1])
    is_image = np.isin(pos, image)
    first = int(image.min()) if len(image) else n_prompt
    gen = (pos[None, n_prompt:] < np.asarray(key_len)[:, None])  # [T, K − N]
    return np.stack([
        a[..., cls].astype(np.float64).sum(-1),
        a[..., (pos < first) & ~is_image].astype(np.float64).sum(-1),
        a[..., (pos >= first) & (pos < n_prompt) & ~is_image].astype(np.float64).sum(-1),
        (a[..., n_prompt:].astype(np.float64) * gen[:, None, None, :]).sum(-1),
        a[..., markers].astype(np.float64).sum(-1),
    ], axis=-1)


def prefill_at(sample: AttentionSample, layer: int) -> np.ndarray:
    """The prefill rows of decoder ``layer`` (0-based), ``[H, R, N]``: ``sample.prefill[i]`` for the ``i``
    with ``prefill_layers[i] == layer``. Raises ValueError naming the sample (its ``image_id`` and
    ``question_id`` attributes, when present) for a layer whose rows are not stored."""
    layers = sample.stored_prefill_layers
    hit = np.flatnonzero(layers == layer)
    if not hit.size:
        name = "__".join(str(sample.attrs[k]) for k in ("image_id", "question_id") if k in sample.attrs) or "(unnamed)"
        raise ValueError(f"sample {name} stores prefill rows at layers {layers.tolist()}, not layer {layer}: "
                         "add it to extraction.prefill_layers")
    return sample.prefill[int(hit[0])]


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a.astype(dtype)``; float32 → float16 through torch (same rounding, vectorised: numpy's
    float16 conversion costs ~0.4 s per 10 MB)."""
    if dtype == "float16" and a.dtype == np.float32 and a.size:
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float16).numpy()
    return a.astype(dtype)


def write_sample(path: str | Path, s: AttentionSample, attention_dtype: str = "float16", compression: int = 1,
                 layout: str = "full") -> None:
    """Write ``s`` to ``path`` atomically (temporary file, then rename).

    ``compression``: gzip level of the attention datasets, 0 for none (attention weights are
    high-entropy: level 1 already saves about as much as 9, and costs ~35 ms per MB written).
    ``layout``: ``"full"`` stores every decode row whole (``decode``); ``"compact"`` its vision-token
    columns (``decode_vision``) and its sums over the other key segments (``decode_segments``, float64,
    summed from the rows as rounded to ``attention_dtype``, so every reader of the two sees the same
    values from both layouts). A compact sample is written compact whatever ``layout`` says.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown decode layout {layout!r} (known: {', '.join(LAYOUTS)})")
    path = Path(path)
    tmp = atomic_target(path)
    if compression:
        kw = dict(compression="gzip", compression_opts=compression, shuffle=True, track_times=False)
    else:
        kw = dict(track_times=False)
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in s.attrs.items():
                f.attrs[k] = str(v) if isinstance(v, str) else v
            t = f.create_group("tokens")
            t.create_dataset("input_ids", data=s.input_ids.astype(np.int64), track_times=False)
            t.create_dataset("input_tokens", data=np.array(s.input_tokens, dtype=object), dtype=_STR, track_times=False)
            t.create_dataset("generated_ids", data=s.generated_ids.astype(np.int64), track_times=False)
            t.create_dataset("generated_tokens", data=np.array(s.generated_tokens, dtype=object), dtype=_STR,
                             track_times=False)
            if s.generated_special is not None:
                t.create_dataset("generated_special", data=np.asarray(s.generated_special, bool), track_times=False)
            v = f.create_group("vision")
            v.create_dataset("spans", data=s.spans.astype(np.int64), track_times=False)
            v.create_dataset("grid", data=s.grid.astype(np.int64), track_times=False)
            v.create_dataset("token_boxes", data=s.token_boxes.astype(np.float32), track_times=False)
            v.create_dataset("cls_positions", data=np.asarray(s.cls_positions, np.int64), track_times=False)
            v.create_dataset("piece_image", data=np.asarray(s.piece_image, np.int64), track_times=False)
            v.create_dataset("piece_kind", data=np.array(s.piece_kinds, dtype=object), dtype=_STR, track_times=False)
            v.create_dataset("marker_positions", data=np.asarray(s.marker_positions, np.int64), track_times=False)
            v.create_dataset("marker_kind", data=np.array(s.marker_kinds, dtype=object), dtype=_STR,
                             track_times=False)
            im = f.create_group("image")
            im.create_dataset("size", data=np.asarray(s.image_size, np.int64), track_times=False)
            im.create_dataset("boxes", data=np.asarray(s.boxes, np.float32).reshape(-1, 4), track_times=False)
            im.create_dataset("labels", data=np.array(s.labels, dtype=object), dtype=_STR, track_times=False)
            im.create_dataset("colours", data=np.array(s.colours, dtype=object), dtype=_STR, track_times=False)
            a = f.create_group("attention")
            if s.decode is not None and layout == "full":
                a.attrs["layout"] = "full"
                _write_rows(a, "decode", _cast(s.decode, attention_dtype), kw)
            else:
                a.attrs["layout"] = "compact"
                if s.decode is not None:
                    dec = _cast(s.decode, attention_dtype)
                    vision = dec[..., s.vision_index]
                    segments = decode_segment_sums(dec, len(s.input_ids), s.vision_index, s.cls_positions,
                                                   s.decode_key_len, s.marker_positions)
                else:
                    vision, segments = _cast(s.compact_vision, attention_dtype), s.compact_segments
                _write_rows(a, "decode_vision", vision, kw)
                a.create_dataset("decode_segments", data=np.asarray(segments, np.float64), **kw)
                a["decode_segments"].attrs["segments"] = list(DECODE_SEGMENTS)
            a.create_dataset("decode_key_len", data=s.decode_key_len.astype(np.int64), track_times=False)
            pre = _cast(s.prefill, attention_dtype)
            a.create_dataset("prefill", data=pre, chunks=(1, *pre.shape[1:]) if pre.size else None,
                             **(kw if pre.size else {}))
            a.create_dataset("prefill_positions", data=s.prefill_positions.astype(np.int64), track_times=False)
            a.create_dataset("prefill_layers", data=s.stored_prefill_layers, track_times=False)
            for name in ("rollout_decode", "rollout_prefill"):
                r = getattr(s, name)
                if r is not None:
                    r = np.asarray(r, np.float32)  # products of many weights: float16 loses too much
                    a.create_dataset(name, data=r, **(kw if r.size else {}))
            if s.vision_encoder is not None:
                _write_vision_encoder(f, s.vision_encoder, attention_dtype, kw)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_rows(group, name: str, data: np.ndarray, kw: dict) -> None:
    """Dataset ``name`` chunked one step (axis 0) per chunk, compressed with ``kw`` unless empty."""
    group.create_dataset(name, data=data, chunks=(1, *data.shape[1:]) if data.size else None,
                         **(kw if data.size else dict(track_times=False)))


def _write_vision_encoder(f, ve: VisionEncoderAttention, attention_dtype: str, kw: dict) -> None:
    g = f.create_group("vision_encoder")
    g.attrs["has_cls"] = bool(ve.has_cls)
    g.attrs["rollout_residual"] = float(ve.rollout_residual)
    plain = dict(track_times=False)
    g.create_dataset("patch_grid", data=ve.patch_grid.astype(np.int64), **plain)
    g.create_dataset("patch_spans", data=ve.patch_spans.astype(np.int64), **plain)
    g.create_dataset("patch_boxes", data=ve.patch_boxes.astype(np.float32), **plain)
    g.create_dataset("patch_token", data=ve.patch_token.astype(np.int64), **plain)
    g.create_dataset("segment", data=ve.segment.astype(np.int32), **(kw if ve.segment.size else plain))
    for name in ("received", "cls_attention", "rollout_received", "rollout_cls"):
        data = _cast(getattr(ve, name), attention_dtype)
        g.create_dataset(name, data=data, **(kw if data.size else plain))
    if ve.full:
        full = g.create_group("full")
        for i, a in enumerate(ve.full):
            a = _cast(a, attention_dtype)
            full.create_dataset(f"image_{i}", data=a, chunks=(1, *a.shape[1:]) if a.size else None,
                                **(kw if a.size else plain))


def _read_vision_encoder(f) -> VisionEncoderAttention | None:
    if "vision_encoder" not in f:
        return None
    g = f["vision_encoder"]
    full = [g["full"][f"image_{i}"][()].astype(np.float32) for i in range(len(g["full"]))] if "full" in g else []
    return VisionEncoderAttention(
        patch_grid=g["patch_grid"][()].reshape(-1, 2),
        patch_spans=g["patch_spans"][()].reshape(-1, 2),
        patch_boxes=g["patch_boxes"][()].reshape(-1, 4),
        patch_token=g["patch_token"][()],
        received=g["received"][()].astype(np.float32),
        cls_attention=g["cls_attention"][()].astype(np.float32),
        rollout_received=g["rollout_received"][()].astype(np.float32),
        rollout_cls=g["rollout_cls"][()].astype(np.float32),
        segment=g["segment"][()],
        full=full,
        has_cls=bool(g.attrs["has_cls"]),
        rollout_residual=float(g.attrs["rollout_residual"]),
    )


def _strs(ds) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in ds[()]]


def read_sample(path: str | Path) -> AttentionSample:
    """Read one cache file; attention arrays come back as float32.

    Raises a one-line error naming the file: :class:`SchemaVersionError` for an unknown schema
    version, :class:`InputError` for a file that is not a readable cache file (truncated, not HDF5, a
    dataset missing) or whose attention holds NaN or infinite values.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            sample = _read(f, path)
    except (OSError, KeyError) as e:
        what = "dataset missing" if isinstance(e, KeyError) else "truncated or not HDF5"
        reason = str(e).splitlines()[0][:120]
        raise InputError(f"{path}: not a readable attention cache file ({what}: {reason})") from None
    try:
        check_layout(sample.spans, sample.grid, len(sample.token_boxes), np.asarray(sample.cls_positions),
                     np.asarray(sample.piece_image), sample.piece_kinds, np.asarray(sample.marker_positions),
                     sample.marker_kinds)
    except ValueError as e:
        raise InputError(f"{path}: /vision does not describe one layout ({e})") from None
    layers = sample.prefill_layers
    n_layers = sample.n_layers
    if (layers.ndim != 1 or len(layers) != sample.prefill.shape[0] or (np.diff(layers) <= 0).any()
            or (len(layers) and not 0 <= layers[0] <= layers[-1] < n_layers)):
        raise InputError(f"{path}: attention/prefill_layers {layers.tolist()} does not name the "
                         f"{sample.prefill.shape[0]} layers of attention/prefill in ascending order within "
                         f"0 … {n_layers - 1}")
    axes = {"decode": ("step", "layer", "head"), "compact_vision": ("step", "layer", "head"),
            "compact_segments": ("step", "layer", "head"), "prefill": ("layer", "head", "row"),
            "rollout_decode": ("step", "key"), "rollout_prefill": ("row", "key")}
    for name, names in axes.items():
        a = getattr(sample, name)
        if a is None:
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            first = np.argwhere(bad)[0]
            if name == "prefill":  # the decoder layer, not the index into the stored layers
                first[0] = layers[first[0]]
            # the named axes only (the key axis is left out of the message)
            where = ", ".join(f"{ax} {i}" for ax, i in zip(names, first, strict=False))
            name = {"compact_vision": "decode_vision", "compact_segments": "decode_segments"}.get(name, name)
            raise InputError(f"{path}: attention/{name} holds {int(bad.sum())} NaN or infinite values "
                             f"(first at {where})")
    return sample


def _optional(f, name: str) -> np.ndarray | None:
    """Float32 dataset ``name``, or None for files written without it."""
    return f[name][()].astype(np.float32) if name in f else None


def _read(f, path: Path) -> AttentionSample:
    version = f.attrs.get("schema_version")
    version = version.item() if isinstance(version, np.generic) else version
    if version not in READ_VERSIONS:
        raise SchemaVersionError(
            f"{path}: unsupported HDF5 schema version {version!r} (this vlmattn reads versions "
            f"{', '.join(map(str, READ_VERSIONS))})"
        )
    layout = f["attention"].attrs.get("layout", "full")
    if layout not in LAYOUTS:
        raise InputError(f"{path}: unknown decode layout {layout!r} in attention (known: {', '.join(LAYOUTS)})")
    compact = layout == "compact"
    segments = None
    if compact:
        names = list(f["attention/decode_segments"].attrs["segments"])
        expected = list(DECODE_SEGMENTS if version >= 3 else DECODE_SEGMENTS_V2)
        if names != expected:
            raise InputError(f"{path}: attention/decode_segments holds segments {names}, expected {expected}")
        segments = f["attention/decode_segments"][()]
        if version < 3:  # no markers before version 3
            segments = np.concatenate([segments, np.zeros((*segments.shape[:-1], 1))], axis=-1)
    rows = f["attention/decode_vision" if compact else "attention/decode"]
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    return AttentionSample(
        input_ids=f["tokens/input_ids"][()],
        input_tokens=_strs(f["tokens/input_tokens"]),
        generated_ids=f["tokens/generated_ids"][()],
        generated_tokens=_strs(f["tokens/generated_tokens"]),
        generated_special=(f["tokens/generated_special"][()].astype(bool) if "tokens/generated_special" in f
                           else None),
        spans=f["vision/spans"][()].reshape(-1, 2),
        grid=f["vision/grid"][()].reshape(-1, 2),
        token_boxes=f["vision/token_boxes"][()],
        cls_positions=f["vision/cls_positions"][()] if "vision/cls_positions" in f else None,
        piece_image=f["vision/piece_image"][()] if "vision/piece_image" in f else None,
        piece_kinds=_strs(f["vision/piece_kind"]) if "vision/piece_kind" in f else None,
        marker_positions=f["vision/marker_positions"][()] if "vision/marker_positions" in f else None,
        marker_kinds=_strs(f["vision/marker_kind"]) if "vision/marker_kind" in f else None,
        image_size=f["image/size"][()],
        boxes=f["image/boxes"][()],
        labels=_strs(f["image/labels"]),
        colours=_strs(f["image/colours"]),
        decode=None if compact else rows[()].astype(np.float32),
        compact_vision=rows[()].astype(np.float32) if compact else None,
        compact_segments=segments,
        decode_key_len=f["attention/decode_key_len"][()],
        prefill=f["attention/prefill"][()].astype(np.float32),
        prefill_positions=f["attention/prefill_positions"][()],
        prefill_layers=(f["attention/prefill_layers"][()] if "attention/prefill_layers" in f
                        else np.arange(rows.shape[1], dtype=np.int64)),
        attrs=attrs,
        vision_encoder=_read_vision_encoder(f),
        rollout_decode=_optional(f, "attention/rollout_decode"),
        rollout_prefill=_optional(f, "attention/rollout_prefill"),
    )


def settings_json(settings: dict) -> str:
    """Canonical JSON of extraction settings (sorted keys), hashed into ``settings_hash``."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
