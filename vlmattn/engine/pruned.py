"""Greedy generation with vision tokens pruned inside the language model from decoder layer ``K`` on.

A prompt of ``N`` tokens holds ``V`` vision tokens at prompt positions ``p_0 < … < p_{V−1}`` (the
adapter's layout spans; a LLaVA CLS token fed with the ``"full"`` strategy counts as text and is never
pruned). ``keep`` selects vision tokens by index ``0 … V−1``; the other ``d = V − |keep|`` are *dropped*,
at prompt positions ``D``. Layers ``0 … K−1`` always run on the whole sequence.

``mode="drop"`` (FastV "inplace", PyramidDrop): before layer ``K`` the hidden states at ``D`` are removed
from the sequence, so layers ``K … L−1`` process ``N − d`` prompt tokens and their KV cache never holds
the dropped keys (prefill and decode both shrink). The per-layer KV cache is a transformers
``DynamicCache`` whose layers grow independently: layers ``< K`` hold ``N + t`` keys after ``t``
decode steps, layers ``≥ K`` hold ``N − d + t``. Rotary position ids of layers ``≥ K``:

    positions="keep"      the original ids (gaps where tokens were dropped; FastV)
    positions="renumber"  0 … N−d−1 for the kept prompt tokens, then N−d+t for decode step t (PyramidDrop)

``mode="mask"`` (FastV's mask variant): the sequence keeps its ``N`` tokens; in layers ``≥ K`` no query
may attend to a key at ``D`` (a dropped query still attends to itself, so that no row is all-masked);
positions are unchanged. No compute is saved. For the kept tokens, and so for every generated token,
``mask`` equals ``drop`` with ``positions="keep"`` up to rounding: a masked key has softmax weight 0,
exactly as a removed one.

Implementation: forward pre-hooks around ``lm.model.generate`` — on each decoder layer ``≥ K`` (which
slice the hidden states at ``K`` and replace the attention mask and the rotary ``(cos, sin)`` of the
layer call) or, for ``drop`` with ``K = 0``, on the language model itself (which slices the input
embeddings and the 2-D attention mask and passes explicit position ids). With nothing dropped, the
``drop`` hooks reproduce their inputs and ``mask`` adds no hook, so the run equals plain greedy
``generate`` bit for bit.

Only the families of :data:`vlmattn.families.ONLINE_PRUNING` (Llama-type decoder with 1-D rotary positions)
are supported; LLaVA-NeXT's newline tokens, like a CLS token, count as text and are never pruned.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError, ModelError
from ..families import ONLINE_PRUNING
from .adapters.base import language_model
from .inference import LoadedModel, model_inputs

MODES = ("drop", "mask")
POSITIONS = ("keep", "renumber")
SUPPORTED_FAMILIES = ONLINE_PRUNING


@dataclass
class PrunedResult:
    """One pruned greedy generation.

    generated_ids ``[T]`` int64, generated_text (special tokens skipped); logits ``[T, vocab]`` float32: the
    raw logits that chose each generated token (row 0 from the prefill's last position, row ``t`` from decode
    step ``t``); first_logits ``[vocab]`` = ``logits[0]``.
    prefill_seconds: wall time of the prefill forward pass (vision encoder included); decode_seconds: wall
    time of the ``T − 1`` decode forward passes together (token selection between passes excluded; on a GPU
    each pass ends with ``torch.cuda.synchronize``). peak_memory_bytes: the CUDA allocator's peak during the call
    (memory_kind ``"cuda"``) or the process's peak resident set size so far (``"rss"``, on the CPU).
    prefill_lengths ``[L]``: tokens each decoder layer processed in prefill (``N`` below ``K``, ``N − d``
    from ``K`` on with ``drop``); cache_lengths ``[L]``: keys in each layer's KV cache at the end
    (``N + T − 1``, or ``N − d + T − 1`` for layers ``≥ K`` with ``drop``).
    kept_positions ``[N − d]`` and dropped_positions ``[d]``: sorted prompt positions.
    cache: the transformers ``Cache`` of the run (per-layer keys ``[1, H_kv, cache_lengths[l], D]``).
    """

    generated_ids: np.ndarray
    generated_text: str
    logits: np.ndarray
    first_logits: np.ndarray
    prefill_seconds: float
    decode_seconds: float
    peak_memory_bytes: int
    memory_kind: str
    prefill_lengths: np.ndarray
    cache_lengths: np.ndarray
    kept_positions: np.ndarray
    dropped_positions: np.ndarray
    layer: int
    mode: str
    positions: str
    cache: object = None


def dropped_prompt_positions(vision_positions: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Prompt positions of the vision tokens not in ``keep``, ``[d]`` sorted.

    ``vision_positions`` ``[V]``: prompt positions of the vision tokens; ``keep``: indices into them
    (distinct integers in ``0 … V−1``, any order), or None for all. Raises ValueError naming a bad index.
    """
    vision_positions = np.asarray(vision_positions, dtype=np.int64)
    v = len(vision_positions)
    if keep is None:
        return np.zeros(0, np.int64)
    keep = np.asarray(keep)
    if keep.ndim != 1 or (keep.size and not np.issubdtype(keep.dtype, np.integer)):
        raise ValueError(f"keep must be a 1-D array of vision-token indices, got shape {keep.shape} dtype {keep.dtype}")
    if keep.size and (keep.min() < 0 or keep.max() >= v):
        raise ValueError(f"keep holds indices outside 0…{v - 1} (the prompt has {v} vision tokens): "
                         f"{keep[(keep < 0) | (keep >= v)][:5].tolist()}")
    if len(np.unique(keep)) != len(keep):
        raise ValueError("keep holds repeated vision-token indices")
    mask = np.ones(v, bool)
    mask[keep.astype(np.int64)] = False
    return np.sort(vision_positions[mask])


class _Pruner:
    """The hooks' shared state for one generation: which positions are kept, the step counter, timings."""

    def __init__(self, lm: LoadedModel, n: int, dropped: np.ndarray | None, layer: int, mode: str, positions: str,
                 decide=None, vision: np.ndarray | None = None):
        self.lm, self.n, self.layer, self.mode, self.positions = lm, n, layer, mode, positions
        self.decide, self.vision = decide, vision
        self.kept = self.dropped = None
        if dropped is not None:
            self.set_dropped(dropped)
        self.text = language_model(lm.model)
        self.calls = 0  # forward passes of the whole model started so far (1 = prefill)
        self.memo: tuple[int, dict] | None = None  # per-pass replacement kwargs of layers ≥ K
        self.prefill_lengths: dict[int, int] = {}
        self.durations: list[float] = []
        self._t0 = 0.0

    def set_dropped(self, dropped: np.ndarray) -> None:
        device = self.lm.device
        self.dropped, self.d = dropped, len(dropped)
        is_dropped = np.zeros(self.n, bool)
        is_dropped[dropped] = True
        self.kept = torch.as_tensor(np.flatnonzero(~is_dropped), device=device)
        self.dropped_cols = torch.as_tensor(is_dropped, device=device)  # [N] bool

    def resolve(self, hidden: torch.Tensor) -> None:
        """With a ``decide`` callable, choose the kept vision tokens from layer K's prefill input."""
        if self.kept is not None:
            return
        try:
            self.set_dropped(dropped_prompt_positions(self.vision, self.decide(hidden)))
        except ValueError as e:
            raise InputError(f"model {self.lm.model_id!r}: {e}") from e

    # --- timing -------------------------------------------------------------------------------------
    def _sync(self):
        if self.lm.device.type == "cuda":
            torch.cuda.synchronize(self.lm.device)

    def start(self, module, args, kwargs):
        self._sync()
        self.calls += 1
        self._t0 = time.perf_counter()

    def stop(self, module, args, kwargs, output):
        self._sync()
        self.durations.append(time.perf_counter() - self._t0)

    # --- helpers ------------------------------------------------------------------------------------
    def key_index(self, kv_len: int) -> torch.Tensor:
        """Indices of the keys of a layer ≥ K among the ``kv_len`` keys of a full-sequence layer."""
        return torch.cat([self.kept, torch.arange(self.n, kv_len, device=self.kept.device)])

    def rope(self, hidden: torch.Tensor, position_ids: torch.Tensor):
        return self.text.rotary_emb(hidden, position_ids=position_ids)

    def record_length(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.calls == 1:
            self.prefill_lengths[module.self_attn.layer_idx] = int(hidden.shape[1])

    # --- drop, K ≥ 1: per-layer hooks ---------------------------------------------------------------
    def drop_layer(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        prefill = self.calls == 1
        if prefill and module.self_attn.layer_idx == self.layer:
            self.resolve(hidden)
            if hidden.shape[1] != self.n:
                raise ModelError(f"layer {self.layer} received {hidden.shape[1]} prefill tokens, expected {self.n}")
            hidden = hidden[:, self.kept]
        if self.memo is None or self.memo[0] != self.calls:
            self.memo = (self.calls, self._drop_kwargs(hidden, kwargs, prefill))
        kwargs = {**kwargs, **self.memo[1]}
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _drop_kwargs(self, hidden, kwargs, prefill: bool) -> dict:
        new = {}
        mask = kwargs.get("attention_mask")
        cos, sin = kwargs["position_embeddings"]
        pos = kwargs.get("position_ids")
        if prefill:
            if mask is not None:
                new["attention_mask"] = mask[:, :, self.kept][:, :, :, self.kept]
            if self.positions == "keep":
                new["position_embeddings"] = (cos[:, self.kept], sin[:, self.kept])
                if pos is not None:
                    new["position_ids"] = pos[:, self.kept]
            else:
                ids = torch.arange(len(self.kept), device=hidden.device)[None]
                new["position_embeddings"] = self.rope(hidden, ids)
                new["position_ids"] = ids
            return new
        if mask is not None:
            new["attention_mask"] = mask[..., self.key_index(mask.shape[-1])]
        if self.positions == "renumber":
            ids = torch.full((1, hidden.shape[1]), self.n + self.calls - 2 - self.d, device=hidden.device)
            new["position_embeddings"] = self.rope(hidden, ids)
            new["position_ids"] = ids
        return new

    # --- drop, K = 0: one hook on the language model ------------------------------------------------
    def drop_inputs(self, module, args, kwargs):
        if args:
            raise ModelError("the language model was called with positional arguments; cannot prune its inputs")
        embeds = kwargs["inputs_embeds"]
        mask = kwargs.get("attention_mask")
        kwargs = dict(kwargs)
        if self.calls == 1:
            if embeds.shape[1] != self.n:
                raise ModelError(f"the language model received {embeds.shape[1]} prefill tokens, expected {self.n}")
            kwargs["inputs_embeds"] = embeds[:, self.kept]
            if mask is not None:
                kwargs["attention_mask"] = mask[:, self.kept]
            renumbered = torch.arange(len(self.kept), device=embeds.device)
            ids = (self.kept if self.positions == "keep" else renumbered)[None]
        else:
            if mask is not None:
                kwargs["attention_mask"] = mask[:, self.key_index(mask.shape[-1])]
            pos = self.n + self.calls - 2 - (self.d if self.positions == "renumber" else 0)
            ids = torch.full((1, embeds.shape[1]), pos, device=embeds.device)
        kwargs["position_ids"] = ids
        return args, kwargs

    # --- mask ---------------------------------------------------------------------------------------
    def mask_layer(self, module, args, kwargs):
        self.resolve(args[0] if args else kwargs["hidden_states"])
        if self.memo is None or self.memo[0] != self.calls:
            self.memo = (self.calls, {"attention_mask": self._masked(kwargs.get("attention_mask"))})
        return args, {**kwargs, **self.memo[1]}

    def _masked(self, mask):
        device = self.kept.device
        if self.calls == 1:
            allowed = torch.ones(self.n, self.n, dtype=torch.bool, device=device).tril()
            allowed &= ~self.dropped_cols[None, :]
            allowed |= torch.eye(self.n, dtype=torch.bool, device=device)
        else:
            kv = self.n + self.calls - 1
            allowed = torch.ones(1, kv, dtype=torch.bool, device=device)
            allowed[:, : self.n] &= ~self.dropped_cols[None, :]
        allowed = allowed[None, None]
        if mask is None:
            return allowed
        if mask.shape[-2:] != allowed.shape[-2:]:
            raise ModelError(f"attention mask of shape {tuple(mask.shape)}, expected […, {allowed.shape[-2]}, "
                             f"{allowed.shape[-1]}]")
        if mask.dtype == torch.bool:
            return mask & allowed
        return mask.masked_fill(~allowed, torch.finfo(mask.dtype).min)


@torch.no_grad()
def generate_pruned(lm: LoadedModel, image, question: str, *, keep, layer: int, mode: str,
                    positions: str, max_new_tokens: int) -> PrunedResult:
    """Greedy generation of up to ``max_new_tokens`` tokens with the vision tokens outside ``keep`` pruned
    from decoder layer ``layer`` (``K``, ``0 ≤ K ≤ L``) on; see the module docstring for ``mode``
    (``"drop"`` | ``"mask"``) and ``positions`` (``"keep"`` | ``"renumber"``; ``"mask"`` needs ``"keep"``).

    ``keep``: indices into the ``V`` vision tokens of the prompt (the adapter's layout), None = keep all,
    or a callable ``keep(hidden) -> indices`` called once, in the prefill pass, with layer K's input hidden
    states ``[1, N, D]`` (a pruner deciding inside the same forward pass; needs ``K ≥ 1``).
    """
    if lm.family not in SUPPORTED_FAMILIES:
        raise ValueError(f"online pruning supports the families {SUPPORTED_FAMILIES} (Llama decoder, 1-D rotary "
                         f"positions), not {lm.family!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if mode == "mask" and positions != "keep":
        raise ValueError("mode 'mask' leaves every position id in place; positions must be 'keep'")
    n_layers = lm.model.config.get_text_config().num_hidden_layers
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be an integer in 0…{n_layers} (the model has {n_layers} decoder layers), "
                         f"got {layer!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer ≥ 1, got {max_new_tokens!r}")
    layer = int(layer)
    inputs = model_inputs(lm, image, question)
    n = int(inputs["input_ids"].shape[1])
    try:
        layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, image.size)
    except ValueError as e:
        raise ModelError(f"model {lm.model_id!r}: cannot lay out its vision tokens ({e})") from e
    vision = layout.vision_positions
    if callable(keep):
        if layer == 0:
            raise ValueError("a keep callable decides from layer K's input: layer must be at least 1")
        state = _Pruner(lm, n, None, layer, mode, positions, decide=keep, vision=vision)
    else:
        try:
            dropped = dropped_prompt_positions(vision, keep)
        except ValueError as e:
            raise InputError(f"model {lm.model_id!r}: {e}") from e
        state = _Pruner(lm, n, dropped, layer, mode, positions)
    layers = list(state.text.layers)
    handles = [lm.model.register_forward_pre_hook(state.start, with_kwargs=True),
               lm.model.register_forward_hook(state.stop, with_kwargs=True)]
    if mode == "drop" and layer == 0:
        handles.append(state.text.register_forward_pre_hook(state.drop_inputs, with_kwargs=True))
    elif mode == "drop":
        handles += [m.register_forward_pre_hook(state.drop_layer, with_kwargs=True) for m in layers[layer:]]
    elif state.kept is None or state.d:
        handles += [m.register_forward_pre_hook(state.mask_layer, with_kwargs=True) for m in layers[layer:]]
    handles += [m.register_forward_pre_hook(state.record_length, with_kwargs=True) for m in layers]
    cuda = lm.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(lm.device)
    try:
        out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                return_dict_in_generate=True, output_logits=True)
    finally:
        for h in handles:
            h.remove()
    if cuda:
        peak, kind = int(torch.cuda.max_memory_allocated(lm.device)), "cuda"
    else:
        peak, kind = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "rss"
    gen = out.sequences[0, n:].cpu()
    logits = torch.cat([step[:1] for step in out.logits]).float().cpu().numpy()
    cache = out.past_key_values
    return PrunedResult(
        generated_ids=gen.numpy().astype(np.int64),
        generated_text=lm.processor.tokenizer.decode(gen, skip_special_tokens=True).strip(),
        logits=logits,
        first_logits=logits[0],
        prefill_seconds=float(state.durations[0]),
        decode_seconds=float(sum(state.durations[1:])),
        peak_memory_bytes=peak,
        memory_kind=kind,
        prefill_lengths=np.array([state.prefill_lengths[i] for i in range(n_layers)], np.int64),
        cache_lengths=np.array([cache.layers[i].get_seq_length() for i in range(n_layers)], np.int64),
        kept_positions=state.kept.cpu().numpy(),
        dropped_positions=state.dropped,
        layer=layer,
        mode=mode,
        positions=positions,
        cache=cache,
    )
