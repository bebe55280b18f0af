"""Row-selective attention capture through transformers' ``AttentionInterface``.

The registered attention function returns exactly what SDPA returns (so generation is unchanged)
and, while a :class:`AttentionRecorder` is active, additionally records

    A[h, r, :] = softmax(q[h, r] · K[h]ᵀ · scale + mask[r])        (float32)

for a few query rows ``r`` only: the prefill rows the recorder asks for, and the single query row of
every decode step. Grouped-query attention is handled by repeating the KV heads. Full ``[H, N, N]``
matrices are never formed. Rows stay on the model's device until generation ends (no per-step
device synchronisation).
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
    ``[H, K_t]`` row per decode forward pass (``K_t`` grows by one each step), on the model's device.
    """

    prefill_positions: torch.Tensor
    prefill: dict[int, torch.Tensor] = field(default_factory=dict)
    decode: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def record(self, layer: int, rows: torch.Tensor, is_prefill: bool) -> None:
        rows = rows.detach()
        if is_prefill:
            if layer in self.prefill:
                raise CaptureError(f"layer {layer} ran two prefill passes in one recording")
            self.prefill[layer] = rows
        else:
            self.decode.setdefault(layer, []).append(rows[:, 0, :])

    @property
    def n_layers(self) -> int:
        return len(self.prefill)

    def decode_rows(self, layer: int, width: int) -> torch.Tensor:
        """``[S, H, width]`` float32 on the CPU: decode rows of ``layer``, zero-padded on the right."""
        rows = self.decode.get(layer, [])
        if not rows:
            return torch.zeros(0, self.prefill[layer].shape[0], width)
        out = rows[0].new_zeros(len(rows), rows[0].shape[0], width)
        for t, r in enumerate(rows):
            out[t, :, : r.shape[-1]] = r
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
) -> torch.Tensor:
    """Softmax attention of selected query rows.

    query ``[B, H, Q, D]``, key ``[B, H_kv, K, D]``, mask bool/additive ``[B, 1|H, Q, K]`` or None
    (causal, bottom-right aligned), rows ``[R]`` indices into Q. Returns float32 ``[H, R, K]`` for
    batch element 0.
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[-1]
    # grouped matmul: query head h uses KV head h // n_kv_groups, without repeating K
    q = query[0, :, rows, :].float().reshape(kv_heads, n_kv_groups * len(rows), dim)
    scores = torch.matmul(q, key[0].float().transpose(-1, -2)).reshape(heads, len(rows), kv_len) * scaling
    if attention_mask is None:
        if q_len > 1:  # causal, bottom-right aligned; a single decode query sees every key
            offset = kv_len - q_len
            allowed = torch.arange(kv_len, device=scores.device)[None, :] <= (rows.to(scores.device)[:, None] + offset)
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
        recorder.record(module.layer_idx, attention_rows(query, key, attention_mask, scale, rows, groups), is_prefill)
    return out, None


def register() -> str:
    """Register the capture function and its mask builder (SDPA's) under :data:`CAPTURE_IMPL`."""
    AttentionInterface.register(CAPTURE_IMPL, capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_IMPL, sdpa_mask)
    return CAPTURE_IMPL


register()
