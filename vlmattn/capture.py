"""Row-selective attention capture through transformers' ``AttentionInterface``.

The registered attention function returns exactly what SDPA returns (so generation is unchanged)
and, while a :class:`AttentionRecorder` is active, additionally records

    A[h, r, :] = softmax(q[h, r] · K[h]ᵀ · scale + mask[r])        (float32)

for a few query rows ``r`` only: the prefill rows the recorder asks for, and the single query row of
every decode step. Grouped-query attention is handled by repeating the KV heads. Full ``[H, N, N]``
matrices are never formed. Rows stay on the model's device until generation ends (no per-step
device synchronisation).

Sliding-window layers (``layer_types[l] == "sliding_attention"``, window ``W``: the query at position
``p`` sees keys ``p-W+1 … p``) keep only their last keys in the cache, so a decode call there sees
``K = min(W, N + t)`` keys, the most recent ones: keys ``N+t-K … N+t-1``. Each decode row is
recorded with that first key position and placed on absolute key positions; keys outside the window
get weight 0. The prefill pass sees all ``N`` keys (the window is in its mask).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CAPTURE_IMPL = "vlmattn_capture"

_ACTIVE: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar(
    "vlmattn_active_recorder", default=None
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
    """``AttentionInterface`` function: SDPA output, plus recorded rows when a recorder is active."""
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
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
