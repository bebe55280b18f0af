"""Row-selective attention capture through transformers' ``AttentionInterface``.

The registered attention function returns exactly what SDPA returns (so generation is unchanged)
and, while a :class:`AttentionRecorder` is active, additionally records

    A[h, r, :] = softmax(q[h, r] · K[h]ᵀ · scale + mask[r])        (float32)

for a few query rows ``r`` only, of every batch element: the prefill rows the recorder asks for (the
same positions for every element, or each element's own), and the single query row of every decode
step. Grouped-query attention is a grouped matmul (query head ``h`` reads KV head
``h // groups``; K and V are never repeated in memory). Full ``[H, N, N]``
matrices are never formed. Rows stay on the model's device until generation ends (no per-step
device synchronisation).

Sliding-window layers (``layer_types[l] == "sliding_attention"``, window ``W``: the query at position
``p`` sees keys ``p-W+1 … p``) keep only their last keys in the cache, so a decode call there sees
``K = min(W, N + t)`` keys, the most recent ones: keys ``N+t-K … N+t-1``. Each decode row is
recorded with that first key position and placed on absolute key positions; keys outside the window
get weight 0. The prefill pass sees all ``N`` keys (the window is in its mask).

While a :class:`RolloutAccumulator` is active (:func:`rolling_out`, one forward pass over ``M``
positions), every layer's attention updates the language model's attention rollout (Abnar & Zuidema
2020) in place, from every query row of the layer's weights, a block of rows at a time:

    Ã_l = a·I + (1−a)·mean_h A_l        (M×M, rows sum to 1, causal; a = ROLLOUT_RESIDUAL = 0.5)
    R_0 = I,   R_l = Ã_l · R_{l−1}

Only ``R`` (``M×M``) is kept; no per-layer matrix is.

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

Every intervention is a hook (:class:`AttentionHook`) its caller passes in for a block (:func:`hooks`;
:func:`recording`, :func:`rolling_out`, :func:`ablating`, :func:`keeping_attention`, :func:`observing`
and :func:`biasing_keys` each pass one); nothing stays active after the block.

Observers and key biases (:func:`observing`, :func:`biasing_keys`), for modules that read or steer
attention in the same forward pass (the learned pruner, :mod:`vlmattn.pruning.learned`):

* an observer ``fn(layer, query, key, attention_mask, scaling, n_kv_groups, window)`` is called by every
  attention call with its inputs (query ``[B, H, Q, D]``, key ``[B, H_kv, K, D]``) and changes nothing;
  :func:`batched_attention_rows` turns them into softmax rows of every batch element;
* a key bias ``fn(layer, K) -> β [B, K] | None`` replaces the layer's output, where it returns biases,
  by attention with ``β`` added to the scores (:func:`key_biased_attention`):

      A[b, h, q, k] = softmax_k(s[b, h, q, k] + β[b, k])     (β = 0 on each query's own key, k = q + K − Q)

  with ``s`` the masked scaled scores. ``β = 0`` gives the layer's attention, ``β = −∞`` masks a key
  out (no row is empty: its own key stays); finite biases are differentiable.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import numbers
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..store import ROLLOUT_RESIDUAL

CAPTURE_IMPL = "vlmattn_capture"
# cap on the float32 weights ``[H, b, M]`` of one block of query rows in the rollout pass (bytes),
# and a smaller one on the CPU, where blocks that stay in cache are faster
_ROLLOUT_BLOCK_BYTES = 32 * 2**20
_CPU_ROLLOUT_BLOCK_BYTES = 4 * 2**20

ABLATION_MODES = ("zero", "mean")

#: the hooks of the attention calls made now: a tuple, extended by :func:`hooks` for its block
_HOOKS: contextvars.ContextVar[tuple] = contextvars.ContextVar("vlmattn_attention_hooks", default=())


@dataclass
class AttentionCall:
    """One language-model attention call as a hook sees it: decoder ``layer``, ``query [B, H, Q, D]``,
    ``key``/``value [B, H_kv, K, D]``, the additive ``mask`` (or None), the score ``scale``, the query heads
    per KV head ``groups`` and the sliding ``window`` (None: full attention)."""

    layer: int
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None
    scale: float
    groups: int
    window: int | None


class AttentionHook:
    """An intervention on the language model's attention calls, passed in by its caller through
    :func:`hooks` and removed when the block ends. Every call runs, for the active hooks in order:
    ``observe`` (reads the inputs), ``attend`` (an output ``[B, Q, H, D]`` replacing SDPA's, or None; at
    most one hook may replace it), ``edit`` (the output, changed or not) and ``after`` (reads the call
    once the output is known, e.g. to record rows). Each method does nothing by default."""

    def observe(self, call: AttentionCall) -> None:
        """Read the call's inputs (change nothing)."""

    def attend(self, call: AttentionCall) -> torch.Tensor | None:
        """The call's output in place of SDPA's, or None to leave it."""
        return None

    def edit(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        """The output ``out [B, Q, H, D]``, changed (a copy) or not."""
        return out

    def after(self, call: AttentionCall) -> None:
        """Read the call after its output is known."""


@contextlib.contextmanager
def hooks(*added: AttentionHook, keep=None):
    """Run the hooks ``added`` on every language-model attention call made inside the ``with`` block,
    after the hooks already active (those for which ``keep(hook)`` is false are left out for the block;
    ``keep=None`` keeps them all). The list is restored when the block ends, however it ends."""
    for h in added:
        if not isinstance(h, AttentionHook):
            raise TypeError(f"hooks take AttentionHook instances, got {type(h).__name__}")
    active = _HOOKS.get()
    token = _HOOKS.set(tuple(h for h in active if keep is None or keep(h)) + added)
    try:
        yield added
    finally:
        _HOOKS.reset(token)


def active_hooks() -> tuple[AttentionHook, ...]:
    """The hooks active now, in order."""
    return _HOOKS.get()


class CaptureError(RuntimeError):
    """The attention calls did not arrive as a recorder expects (the model is not capturable)."""


@dataclass
class AttentionRecorder(AttentionHook):
    """Collects attention rows of one generation call, every batch element.

    ``prefill_positions``: positions (in the padded batch sequence) whose rows are computed in the
    prefill pass, ``[R]`` (the same for every batch element) or ``[B, R]`` (per element, e.g. each
    sample's own positions shifted by its left padding). All of them are kept at the layers in
    ``prefill_layers`` (None: every layer), only the rows ``other_rows`` (``[R']`` or ``[B, R']``, indices
    into the ``R`` rows) at the others (the rows are computed alike, so the kept ones are bit for bit
    the same). After generation, ``prefill[layer]`` is ``[B, H, R, N]`` (``[B, H, R', N]`` at a layer
    outside ``prefill_layers``) and ``decode[layer]`` a list with one ``(first_key, [B, H, K_t])`` per
    decode forward pass, on the model's device: decode pass ``t`` (``t = 1, 2, …``) has ``N + t`` keys
    so far, and its row covers keys ``first_key … first_key + K_t - 1`` (``K_t = N + t`` and
    ``first_key = 0``, or on a sliding-window layer the last ``K_t = min(W, N + t)`` keys).
    """

    prefill_positions: torch.Tensor
    prefill_layers: frozenset[int] | None = None
    other_rows: torch.Tensor | None = None
    prefill: dict[int, torch.Tensor] = field(default_factory=dict)
    decode: dict[int, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)

    def after(self, call: AttentionCall) -> None:
        """Record the call's rows: the prefill positions in a multi-position call, the single query row of
        a decode step."""
        is_prefill = call.query.shape[2] > 1
        if is_prefill:
            rows = self.prefill_positions.to(call.query.device)
        else:
            rows = torch.zeros(1, dtype=torch.long, device=call.query.device)
        a = batched_attention_rows(call.query, call.key, call.mask, call.scale, rows, call.groups, call.window)
        self.record(call.layer, a, is_prefill, call.window)

    def record(self, layer: int, rows: torch.Tensor, is_prefill: bool, window: int | None = None) -> None:
        """Keep ``rows [B, H, R, K]`` of ``layer``; ``window`` is the layer's sliding window (None: full)."""
        rows = rows.detach()
        if is_prefill:
            if layer in self.prefill:
                raise CaptureError(f"layer {layer} ran two prefill passes in one recording")
            self.prefill[layer] = rows if self.keeps_all_rows(layer) else _take_rows(rows, self.other_rows)
            return
        if layer not in self.prefill:
            raise CaptureError(f"layer {layer} ran a decode step before its prefill pass")
        steps = self.decode.setdefault(layer, [])
        seen = self.prefill[layer].shape[-1] + len(steps) + 1  # keys 0 … seen-1 exist at this step
        width = rows.shape[-1]
        if width != seen and (window is None or width != min(int(window), seen)):
            expected = f"{seen}" if window is None else f"{seen} or the last {min(int(window), seen)} (window {window})"
            raise CaptureError(f"layer {layer} decode step {len(steps) + 1} saw {width} keys, expected {expected}")
        steps.append((seen - width, rows[:, :, 0, :]))

    def keeps_all_rows(self, layer: int) -> bool:
        """Whether ``layer`` keeps every row of ``prefill_positions`` (else only ``other_rows``)."""
        return self.prefill_layers is None or layer in self.prefill_layers

    @property
    def n_layers(self) -> int:
        return len(self.prefill)

    def decode_rows(self, layer: int, width: int) -> torch.Tensor:
        """``[S, B, H, width]`` float32 on the CPU: decode rows of ``layer`` on absolute key positions,
        zero at keys the row does not cover (outside a sliding window, or not yet generated)."""
        rows = self.decode.get(layer, [])
        if not rows:
            return torch.zeros(0, *self.prefill[layer].shape[:2], width)
        out = rows[0][1].new_zeros(len(rows), *rows[0][1].shape[:2], width)
        for t, (first, r) in enumerate(rows):
            out[t, :, :, first : first + r.shape[-1]] = r
        return out.cpu()


def _take_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows [B, H, R, K]`` at row indices ``index`` ``[R']`` (every element) or ``[B, R']`` (per element)."""
    index = index.to(rows.device)
    if index.dim() == 1:
        return rows[:, :, index]
    b, h, _, k = rows.shape
    return rows.gather(2, index[:, None, :, None].expand(b, h, index.shape[1], k))


def recording(recorder: AttentionRecorder):
    """Activate ``recorder`` for attention calls made inside the ``with`` block (:func:`hooks`)."""
    return hooks(recorder)


class RolloutAccumulator(AttentionHook):
    """Attention rollout of the language model over ``M`` positions, accumulated during one forward pass.

    Layer ``l`` (``0 … L−1``, called in that order) brings its post-rope ``q``, ``k`` ``[1, H|H_kv, M, D]``;
    every query row of ``A_l`` ``[H, M, M]`` is computed (:func:`attention_rows`, so grouped-query
    attention, sliding windows and masks are those of the capture) in blocks of ``b`` rows
    (``H·b·M`` float32 weights within :data:`_ROLLOUT_BLOCK_BYTES`), head-meaned, and folded in:

        R ← Ã_l · R = a·R + (1−a)·Ā_l·R,      Ā_l = mean_h A_l,  a = ``residual``

    in place, from the last block of rows to the first: ``Ā_l`` is causal (lower triangular), so the
    new rows ``r0:r1`` read only rows ``0 … r1−1`` of ``R``, none of which has been overwritten yet;
    ``R`` is lower triangular too and only its first ``r1`` columns enter. With ``causal=False`` (Gemma 3's
    prefill, where the tokens of an image attend to each other both ways) each layer reads a copy of
    the previous ``R`` instead (``8·M²`` bytes more while it runs) and every column enters. Cost per layer: one more
    weight computation of ``H·M²`` scores and ``≈ M³/3`` multiply-adds; memory: ``R`` plus one block.

    ``R`` is float64. Its rows are convex combinations (row-stochastic products), so rounding never
    grows through the product, but in float32 every layer adds an error of order ``ε₃₂·√M`` to
    entries that are often ~1/M; float64 keeps the accumulated error far below the float32 the
    result is stored in, so stored rows are the rounding of the exact rollout of the captured
    weights. The price is ``8·M²`` bytes (0.2 GB at ``M`` = 5000) and float64 matrix products, which
    datacentre GPUs and CPUs run at half their float32 rate or better.
    """

    def __init__(self, n_layers: int, length: int, device, residual: float = ROLLOUT_RESIDUAL, causal: bool = True):
        self.causal = bool(causal)
        self.n_layers = int(n_layers)
        self.length = int(length)
        self.residual = float(residual)
        self.layer = 0
        self.rollout = torch.eye(self.length, dtype=torch.float64, device=device)
        # weight above the diagonal, summed over layers (checked once at the end, without a sync per block)
        self._acausal = torch.zeros((), dtype=torch.float64, device=device)

    def after(self, call: AttentionCall) -> None:
        """Fold the call's weights into the rollout (:meth:`update`)."""
        self.update(call.layer, call.query, call.key, call.mask, call.scale, call.groups, call.window)

    def update(self, layer: int, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
               scaling: float, n_kv_groups: int, window: int | None = None) -> None:
        """Fold layer ``layer``'s weights into the rollout (arguments as in :func:`attention_rows`)."""
        if layer != self.layer:
            raise CaptureError(f"rollout: layer {layer} attended while layer {self.layer} was expected next")
        if query.shape[0] != 1 or query.shape[2] != self.length or key.shape[2] != self.length:
            raise CaptureError(
                f"rollout: layer {layer} attended with {query.shape[2]} queries over {key.shape[2]} keys "
                f"(batch {query.shape[0]}), expected one pass over all {self.length} positions"
            )
        heads, m = query.shape[1], self.length
        cap = _ROLLOUT_BLOCK_BYTES if query.device.type != "cpu" else _CPU_ROLLOUT_BLOCK_BYTES
        block = max(1, min(m, cap // (4 * heads * m)))
        a, r = self.residual, self.rollout
        previous = None if self.causal else r.clone()
        for r0 in range(((m - 1) // block) * block, -1, -block):
            r1 = min(m, r0 + block)
            rows = torch.arange(r0, r1, device=query.device)
            mean = attention_rows(query, key, attention_mask, scaling, rows, n_kv_groups, window).mean(dim=0)
            mean = mean.to(torch.float64)  # [b, M]
            if previous is not None:
                r[r0:r1] = torch.addmm(previous[r0:r1], mean, previous, beta=a, alpha=1 - a)
                continue
            self._acausal += mean[:, r1:].sum() + torch.triu(mean[:, r0:r1], diagonal=1).sum()
            r[r0:r1, :r1] = torch.addmm(r[r0:r1, :r1], mean[:, :r1], r[:r1, :r1], beta=a, alpha=1 - a)
        self.layer += 1

    def rows(self, positions) -> torch.Tensor:
        """``R_L[positions, :]`` ``[len, M]`` float32 on the CPU, once every layer has run."""
        if self.layer != self.n_layers:
            raise CaptureError(f"rollout: {self.layer} of {self.n_layers} language-model layers attended")
        leak = float(self._acausal)
        if leak > 0:
            raise CaptureError(f"rollout: attention is not causal ({leak:.3g} weight on later keys; a family "
                               "with bidirectional prefill needs causal=False)")
        return self.rollout[torch.as_tensor(positions, device=self.rollout.device)].float().cpu()


def rolling_out(accumulator: RolloutAccumulator):
    """Activate ``accumulator`` for attention calls inside the ``with`` block; no recorder records there."""
    return hooks(accumulator, keep=lambda h: not isinstance(h, AttentionRecorder))


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
class _ActiveAblation(AttentionHook):
    """An ablation inside one :func:`ablating` block, with the per-layer head means ``[B, 1, h, D]``
    of its latest multi-position call (mode ``"mean"``)."""

    ablation: HeadAblation
    means: dict[int, torch.Tensor] = field(default_factory=dict)

    def edit(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        return ablate_heads(out, call.layer, self)


def ablating(ablation: HeadAblation | None):
    """Apply ``ablation`` (or nothing, for ``None``) to language-model attention calls in the block
    (a hook, :func:`hooks`, with its own head means)."""
    return hooks(*([] if ablation is None else [_ActiveAblation(ablation)]))


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
    """Softmax attention of selected query rows of batch element 0: float32 ``[H, R, K]``, see
    :func:`batched_attention_rows` (to which it is ``batched_attention_rows(query[:1], …)[0]``)."""
    mask = None if attention_mask is None else attention_mask[:1]
    return batched_attention_rows(query[:1], key[:1], mask, scaling, rows, n_kv_groups, window)[0]


def _causal(rows: torch.Tensor, q_len: int, kv_len: int, window: int | None = None) -> torch.Tensor:
    """``[..., K]`` bool for rows ``[...]``: the keys query row ``r`` may see, causal and bottom-right
    aligned (``k ≤ r + K − Q``), and with a sliding ``window`` only ``k > r + K − Q − window``."""
    last = rows[..., None] + (kv_len - q_len)
    keys = torch.arange(kv_len, device=rows.device)
    allowed = keys <= last
    if window is not None:
        allowed &= keys > last - int(window)
    return allowed


def batched_attention_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    rows: torch.Tensor,
    n_kv_groups: int,
    window: int | None = None,
) -> torch.Tensor:
    """Softmax attention of selected query rows, every batch element.

    query ``[B, H, Q, D]``, key ``[B, H_kv, K, D]``, mask bool/additive ``[B|1, 1|H, Q, K]`` or None
    (causal, bottom-right aligned: row ``r`` sees keys ``k ≤ r + K - Q``, and with a sliding
    ``window`` only ``k > r + K - Q - window``), rows ``[R]`` indices into Q (the same rows of every
    element) or ``[B, R]`` (element ``b``'s rows ``rows[b]``). Returns float32 ``[B, H, R, K]``.
    """
    batch, q_len, kv_len = query.shape[0], query.shape[2], key.shape[2]
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[-1]
    per_element = rows.dim() == 2
    n_rows = rows.shape[-1]
    if per_element:
        q = query.gather(2, rows[:, None, :, None].expand(batch, heads, n_rows, dim))
    else:
        q = query[:, :, rows, :]
    # grouped matmul: query head h uses KV head h // n_kv_groups, without repeating K
    q = q.float().reshape(batch, kv_heads, n_kv_groups * n_rows, dim)
    scores = torch.matmul(q, key.float().transpose(-1, -2)).reshape(batch, heads, n_rows, kv_len) * scaling
    if attention_mask is None:
        # causal, bottom-right aligned; without a window a single decode query sees every key
        if q_len > 1 or window is not None:
            allowed = _causal(rows.to(scores.device), q_len, kv_len, window)
            scores = scores.masked_fill(~(allowed[:, None] if per_element else allowed[None, None]), float("-inf"))
    else:
        if per_element:
            m = attention_mask.expand(batch, -1, -1, -1)
            m = m.gather(2, rows[:, None, :, None].expand(batch, m.shape[1], n_rows, kv_len))
        else:
            m = attention_mask[:, :, rows, :]
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
    return torch.softmax(scores, dim=-1)


def key_biased_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, scaling: float, n_kv_groups: int,
                         bias: torch.Tensor) -> torch.Tensor:
    """Attention output ``[B, Q, H, D]`` (query's dtype) with key biases ``bias [B, K]`` added to the masked
    scaled scores, 0 on each query's own key (module docstring); float32, differentiable in ``bias``
    (full causal attention; no sliding window). query ``[B, H, Q, D]``, key/value ``[B, H_kv, K, D]``, mask
    as for :func:`batched_attention_rows`."""
    q_len, kv_len = query.shape[2], key.shape[2]
    if bias.shape != (query.shape[0], kv_len):
        raise CaptureError(f"key biases of shape {tuple(bias.shape)}, expected ({query.shape[0]}, {kv_len})")
    k = key.float().repeat_interleave(n_kv_groups, dim=1)
    scores = torch.matmul(query.float(), k.transpose(-1, -2)) * scaling  # [B, H, Q, K]
    keys = torch.arange(kv_len, device=scores.device)[None, :]
    last = torch.arange(q_len, device=scores.device)[:, None] + (kv_len - q_len)  # each row's own key
    if attention_mask is None:
        scores = scores.masked_fill(~_causal(torch.arange(q_len, device=scores.device), q_len, kv_len), float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask.float()
    per_row = torch.where(keys == last, torch.zeros((), device=scores.device), bias.float()[:, None, :])  # [B, Q, K]
    attn = torch.softmax(scores + per_row[:, None], dim=-1)
    return attention_output(attn, value, n_kv_groups, query.dtype)


def attention_output(attn: torch.Tensor, value: torch.Tensor, n_kv_groups: int, dtype: torch.dtype) -> torch.Tensor:
    """``A · V`` as the attention module expects it: ``[B, Q, H, D]`` in ``dtype``, from weights
    ``attn [B, H, Q, K]`` and values ``[B, H_kv, K, D]`` (query head ``h`` reads KV head ``h // n_kv_groups``),
    computed in float32."""
    v = value.float().repeat_interleave(n_kv_groups, dim=1)
    return torch.matmul(attn, v).transpose(1, 2).to(dtype).contiguous()


class KeptAttention(AttentionHook):
    """Keeps every call's full weights as ``store[layer] = A [B, H, Q, K]`` (float32) and returns
    ``A · V`` (module docstring), differentiably."""

    def __init__(self, store: dict):
        self.store = store

    def attend(self, call: AttentionCall) -> torch.Tensor:
        attn = batched_attention_rows(call.query, call.key, call.mask, call.scale,
                                      torch.arange(call.query.shape[2], device=call.query.device), call.groups,
                                      call.window)
        self.store[call.layer] = attn
        return attention_output(attn, call.value, call.groups, call.query.dtype)


class Observer(AttentionHook):
    """Calls ``fn(layer, query, key, attention_mask, scaling, n_kv_groups, window)`` with every call's
    inputs (module docstring)."""

    def __init__(self, fn):
        self.fn = fn

    def observe(self, call: AttentionCall) -> None:
        self.fn(call.layer, call.query, call.key, call.mask, call.scale, call.groups, call.window)


class KeyBias(AttentionHook):
    """Layers for which ``fn(layer, K)`` returns key biases ``[B, K]`` (``K`` keys) attend with them
    (:func:`key_biased_attention`); None leaves a layer's attention unchanged."""

    def __init__(self, fn):
        self.fn = fn

    def attend(self, call: AttentionCall) -> torch.Tensor | None:
        bias = self.fn(call.layer, call.key.shape[2])
        if bias is None:
            return None
        return key_biased_attention(call.query, call.key, call.value, call.mask, call.scale, call.groups, bias)


def keeping_attention(store: dict):
    """Inside the ``with`` block, every language-model attention call keeps its full weights in ``store``
    (:class:`KeptAttention`)."""
    return hooks(KeptAttention(store))


def observing(fn):
    """Inside the ``with`` block, every attention call is observed by ``fn`` (:class:`Observer`)."""
    return hooks(Observer(fn))


def biasing_keys(fn):
    """Inside the ``with`` block, the layers ``fn`` gives biases for attend with them (:class:`KeyBias`)."""
    return hooks(KeyBias(fn))


def capture_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``AttentionInterface`` function: SDPA's output ``[B, Q, H, D]``, bit for bit, without active hooks;
    with them (:func:`hooks`), each hook observes the call, one may replace the output (kept attention,
    key biases), each may edit it (head ablation) and each reads the call afterwards (recorders,
    rollout accumulators), in the order :class:`AttentionHook` gives."""
    active = _HOOKS.get()
    if not active:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                        **kwargs)
        return out, None
    call = AttentionCall(layer=module.layer_idx, query=query, key=key, value=value, mask=attention_mask,
                         scale=scaling if scaling is not None else query.shape[-1] ** -0.5,
                         groups=getattr(module, "num_key_value_groups", query.shape[1] // key.shape[1]),
                         window=kwargs.get("sliding_window", getattr(module, "sliding_window", None)))
    for h in active:
        h.observe(call)
    out = None
    for h in active:
        replaced = h.attend(call)
        if replaced is not None:
            if out is not None:
                raise CaptureError("two active hooks replace the same attention output (e.g. kept attention and "
                                   "key biases)")
            out = replaced
    if out is None:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                        **kwargs)
    for h in active:
        out = h.edit(call, out)
    for h in active:
        h.after(call)
    return out, None


@functools.cache
def register() -> str:
    """Register the capture function and its mask builder (SDPA's) under :data:`CAPTURE_IMPL` in
    transformers' global interfaces, once, on first use (:func:`vlmattn.engine.inference.load_model`
    calls it); importing this module registers nothing."""
    AttentionInterface.register(CAPTURE_IMPL, capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_IMPL, sdpa_mask)
    return CAPTURE_IMPL
