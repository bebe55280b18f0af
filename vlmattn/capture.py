"""Row-selective attention capture through transformers' ``AttentionInterface``.

The registered attention function returns exactly what SDPA returns (so generation is unchanged)
and, while a :class:`AttentionRecorder` is active, additionally records

    A[h, r, :] = softmax(q[h, r] · K[h]ᵀ · scale + mask[r])        (float32)

for a few query rows ``r`` only: the prefill rows the recorder asks for, and the single query row of
every decode step. Grouped-query attention is a grouped matmul (query head ``h`` reads KV head
``h // groups``; K and V are never repeated in memory). Full ``[H, N, N]``
matrices are never formed. Rows stay on the model's device until generation ends (no per-step
device synchronisation).

Sliding-window layers (``layer_types[l] == "sliding_attention"``, window ``W``: the query at position
``p`` sees keys ``p-W+1 … p``) keep only their last keys in the cache, so a decode call there sees
``K = min(W, N + t)`` keys, the most recent ones: keys ``N+t-K … N+t-1``. Each decode row is
recorded with that first key position and placed on absolute key positions; keys outside the window
get weight 0. The prefill pass sees all ``N`` keys (the window is in its mask).

Head ablation: while a :class:`HeadAblation` is active (:func:`ablating`), the function replaces the
outputs of listed query heads before the attention module projects them. SDPA's output is
``O [B, Q, H, D]`` (the module then reshapes it to ``[B, Q, H·D]`` for ``o_proj``, head ``h`` on
features ``h·D … (h+1)·D - 1``), and for a listed head ``h`` of layer ``l``

    zero:  O[b, q, h, :] ← 0
    mean:  O[b, q, h, :] ← Ō[b, h, :] = (1/Q) Σ_{q'} O[b, q', h, :]

with the mean over the ``Q`` query positions of the same forward pass (batch element by batch
element, computed in float32). A single-position call (``Q = 1``, a decode step) takes ``Ō`` of the
latest multi-position call of layer ``l`` inside the same :func:`ablating` block (the prefill of the
same generation); with none, it raises :class:`CaptureError`. Every other head, and every layer not
listed, keeps SDPA's output bit for bit; with no ablation active the function is unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CAPTURE_IMPL = "vlmattn_capture"

ABLATION_MODES = ("zero", "mean")

_ACTIVE: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar(
    "vlmattn_active_recorder", default=None
)
_ABLATION: contextvars.ContextVar[_ActiveAblation | None] = contextvars.ContextVar(
    "vlmattn_active_ablation", default=None
)


class CaptureError(RuntimeError):
    """The attention calls did not arrive as a recorder expects (the model is not capturable)."""


@dataclass
class AttentionRecorder:
    """Collects attention rows of one generation call.

    ``prefill_positions``: prompt positions whose rows are kept from the prefill pass.
    After generation, ``prefill[layer]`` is ``[H, R, N]`` and ``decode[layer]`` a list with one
    ``(first_key, [H, K_t])`` per decode forward pass, on the model's device: decode pass ``t``
    (``t = 1, 2, …``) has ``N + t`` keys so far, and its row covers keys
    ``first_key … first_key + K_t - 1`` (``K_t = N + t`` and ``first_key = 0``, or on a sliding-window
    layer the last ``K_t = min(W, N + t)`` keys).
    """

    prefill_positions: torch.Tensor
    prefill: dict[int, torch.Tensor] = field(default_factory=dict)
    decode: dict[int, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)

    def record(self, layer: int, rows: torch.Tensor, is_prefill: bool, window: int | None = None) -> None:
        """Keep ``rows [H, R, K]`` of ``layer``; ``window`` is the layer's sliding window (None: full)."""
        rows = rows.detach()
        if is_prefill:
            if layer in self.prefill:
                raise CaptureError(f"layer {layer} ran two prefill passes in one recording")
            self.prefill[layer] = rows
            return
        if layer not in self.prefill:
            raise CaptureError(f"layer {layer} ran a decode step before its prefill pass")
        steps = self.decode.setdefault(layer, [])
        seen = self.prefill[layer].shape[-1] + len(steps) + 1  # keys 0 … seen-1 exist at this step
        width = rows.shape[-1]
        if width != seen and (window is None or width != min(int(window), seen)):
            expected = f"{seen}" if window is None else f"{seen} or the last {min(int(window), seen)} (window {window})"
            raise CaptureError(f"layer {layer} decode step {len(steps) + 1} saw {width} keys, expected {expected}")
        steps.append((seen - width, rows[:, 0, :]))

    @property
    def n_layers(self) -> int:
        return len(self.prefill)

    def decode_rows(self, layer: int, width: int) -> torch.Tensor:
        """``[S, H, width]`` float32 on the CPU: decode rows of ``layer`` on absolute key positions,
        zero at keys the row does not cover (outside a sliding window, or not yet generated)."""
        rows = self.decode.get(layer, [])
        if not rows:
            return torch.zeros(0, self.prefill[layer].shape[0], width)
        out = rows[0][1].new_zeros(len(rows), rows[0][1].shape[0], width)
        for t, (first, r) in enumerate(rows):
            out[t, :, first : first + r.shape[-1]] = r
        return out.cpu()


@contextlib.contextmanager
def recording(recorder: AttentionRecorder):
    """Activate ``recorder`` for attention calls made inside the ``with`` block."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def _is_index(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, numbers.Integral) and x >= 0


@dataclass
class HeadAblation:
    """Query heads of the language model whose attention output is replaced (see the module docstring).

    ``heads``: layer → query heads of that layer (stored as sorted tuples without repeats); ``mode``:
    ``"zero"`` (the head's output is 0) or ``"mean"`` (its mean over the query positions).
    """

    heads: dict[int, tuple[int, ...]]
    mode: str

    def __post_init__(self):
        if self.mode not in ABLATION_MODES:
            raise ValueError(f"ablation mode must be one of {ABLATION_MODES}, got {self.mode!r}")
        heads = {}
        for layer, hs in dict(self.heads).items():
            if not _is_index(layer):
                raise ValueError(f"ablation layers must be integers ≥ 0, got {layer!r}")
            hs = tuple(hs)
            if not all(_is_index(h) for h in hs):
                raise ValueError(f"ablation heads of layer {layer} must be integers ≥ 0, got {list(hs)}")
            if hs:
                heads[int(layer)] = tuple(sorted({int(h) for h in hs}))
        self.heads = heads

    @classmethod
    def from_pairs(cls, pairs, mode: str) -> HeadAblation:
        """Ablation of the ``(layer, head)`` pairs of ``pairs``."""
        heads: dict[int, list[int]] = {}
        for layer, head in pairs:
            heads.setdefault(int(layer), []).append(int(head))
        return cls({layer: tuple(hs) for layer, hs in heads.items()}, mode)


@dataclass
class _ActiveAblation:
    """An ablation inside one :func:`ablating` block, with the per-layer head means ``[B, 1, h, D]``
    of its latest multi-position call (mode ``"mean"``)."""

    ablation: HeadAblation
    means: dict[int, torch.Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def ablating(ablation: HeadAblation | None):
    """Apply ``ablation`` (or nothing, for ``None``) to language-model attention calls in the block."""
    token = _ABLATION.set(None if ablation is None else _ActiveAblation(ablation))
    try:
        yield ablation
    finally:
        _ABLATION.reset(token)


def ablate_heads(out: torch.Tensor, layer: int, active: _ActiveAblation) -> torch.Tensor:
    """SDPA output ``out [B, Q, H, D]`` of ``layer`` with the heads of ``active`` replaced (a copy)."""
    heads = active.ablation.heads.get(layer)
    if not heads:
        return out
    n_heads = out.shape[2]
    if heads[-1] >= n_heads:
        raise ValueError(f"ablation of layer {layer} names head {heads[-1]}, but the layer has {n_heads} heads")
    idx = torch.tensor(heads, device=out.device)
    out = out.clone()
    if active.ablation.mode == "zero":
        out[:, :, idx] = 0
        return out
    if out.shape[1] > 1:
        mean = out[:, :, idx].float().mean(dim=1, keepdim=True).to(out.dtype)  # [B, 1, h, D]
        active.means[layer] = mean
    elif layer in active.means:
        mean = active.means[layer]
    else:
        raise CaptureError(f"mean ablation of layer {layer}: a single-position call with no earlier "
                           "multi-position call in this ablating block to take the head means from")
    out[:, :, idx] = mean.expand(-1, out.shape[1], -1, -1)
    return out


def attention_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    rows: torch.Tensor,
    n_kv_groups: int,
    window: int | None = None,
) -> torch.Tensor:
    """Softmax attention of selected query rows.

    query ``[B, H, Q, D]``, key ``[B, H_kv, K, D]``, mask bool/additive ``[B, 1|H, Q, K]`` or None
    (causal, bottom-right aligned: row ``r`` sees keys ``k ≤ r + K - Q``, and with a sliding
    ``window`` only ``k > r + K - Q - window``), rows ``[R]`` indices into Q. Returns float32
    ``[H, R, K]`` for batch element 0.
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[-1]
    # grouped matmul: query head h uses KV head h // n_kv_groups, without repeating K
    q = query[0, :, rows, :].float().reshape(kv_heads, n_kv_groups * len(rows), dim)
    scores = torch.matmul(q, key[0].float().transpose(-1, -2)).reshape(heads, len(rows), kv_len) * scaling
    if attention_mask is None:
        # causal, bottom-right aligned; without a window a single decode query sees every key
        if q_len > 1 or window is not None:
            last = rows.to(scores.device)[:, None] + (kv_len - q_len)  # last key each row may see
            keys = torch.arange(kv_len, device=scores.device)[None, :]
            allowed = keys <= last
            if window is not None:
                allowed &= keys > last - int(window)
            scores = scores.masked_fill(~allowed[None], float("-inf"))
    else:
        m = attention_mask[0][:, rows, :]
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + m.float()
    return torch.softmax(scores, dim=-1)


def capture_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``AttentionInterface`` function: SDPA output ``[B, Q, H, D]``, with the heads of an active
    :class:`HeadAblation` replaced, plus recorded rows when a recorder is active."""
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    active = _ABLATION.get()
    if active is not None:
        out = ablate_heads(out, module.layer_idx, active)
    recorder = _ACTIVE.get()
    if recorder is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        is_prefill = query.shape[2] > 1
        if is_prefill:
            rows = recorder.prefill_positions.to(query.device)
        else:
            rows = torch.zeros(1, dtype=torch.long, device=query.device)
        groups = getattr(module, "num_key_value_groups", query.shape[1] // key.shape[1])
        window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
        a = attention_rows(query, key, attention_mask, scale, rows, groups, window)
        recorder.record(module.layer_idx, a, is_prefill, window)
    return out, None


def register() -> str:
    """Register the capture function and its mask builder (SDPA's) under :data:`CAPTURE_IMPL`."""
    AttentionInterface.register(CAPTURE_IMPL, capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_IMPL, sdpa_mask)
    return CAPTURE_IMPL


register()
