"""A learned visual-token pruner whose keep logits take the language model's own text→vision attention
as a residual (``VisionPrunerHead``), attached to a frozen LLaVA-family model at decoder layer ``K``.

One head per configured layer ``K`` (``1 ≤ K < L``, tokens dropped from layer ``K`` on, as the pruning
harness's ``prune_layer``). For a batch of ``B`` prompts of ``N`` tokens whose ``V`` vision tokens sit at
the positions ``p_0 < … < p_{V−1}`` (the same in every prompt), the head at layer ``K`` reads

    x [B, V, D]   the hidden states of the vision tokens entering layer K
    e [B, N, D]   the language model's input embeddings, of which the question tokens (``question [B, N]``,
                  the text after the image up to the end of the prompt) are the keys of a cross-attention
    a [B, V]      layer K − 1's text→vision attention, mean over the heads h and the prompt's text rows
                  T_b (not vision, not padding, not the answer being trained on):

                      a[b, v] = 1/(H |T_b|) Σ_h Σ_{r ∈ T_b} A_{K−1}[b, h, r, p_v]

                  computed from the query and key states that layer K − 1's attention call receives,
                  through the project's attention function (:func:`vlmattn.engine.capture.observing`) in the
                  same forward pass: no second pass, no eager attention. Layer K − 1 is the last layer
                  that sees every token, and FastV's scoring layer.

and gives keep logits ``ℓ [B, V]``:

    u = W LN(x)                          (D → d)
    c = MHA(u, LN(e_q), LN(e_q))         cross-attention to the question tokens (d, n_heads)
    ℓ = MLP(LN(u + c))                   (d → d → 1)
    ℓ ← ℓ + w · g(a)                     with use_attn_residual (w fixed, or learned: learnable_attn_weight)

``g`` (``residual_scale``) sets the residual's scale relative to the logits, which are O(1):

    raw          g(a) = a, as in the seed: a ≈ 1/V, so w · a ≈ w / V and a weight of 0.5 moves the
                 logits by about 0.01 (V = 64) or 0.001 (V = 576); the residual does nothing unless w ~ V
    standardize  g(a) = (a − mean_v a) / (std_v a + 1e-6), per prompt: zero mean, unit spread, so w is
                 in logit units whatever V and however peaked the attention
    log          g(a) = log(V a + 1e-6): 0 for uniform attention; w · g multiplies the keep odds by (V a)^w

Keep mask ``m [B, V]``: in training, a straight-through Gumbel-softmax sample of the two classes
keep/drop, ``s = σ((ℓ + G₁ − G₂) / τ)`` with ``G`` standard Gumbel noise, hard ``m = 1[s > ½]``; at
inference the ``k`` highest logits (:func:`keep_indices`, the budget ``k`` of the harness). Layers ≥ K
attend to the vision keys with the biases ``β = log m`` (:func:`vlmattn.engine.capture.biasing_keys`: ``−∞``
drops a key, with positions kept), in training ``β = log m + log s − sg(log s)``: the forward pass is the
hard mask and the gradient reaches ``ℓ`` through ``log s``. A kept token's gradient is its attention's
effect on the loss (bounded by its attention weight); a dropped token has none, and comes back through
the noise and the budget loss (a multiplicative mask instead, DynamicViT's, gives a dropped key that
outscores every kept one a gradient ∝ exp(its score margin), which swamps training). In generation
(:func:`vlmattn.engine.pruned.generate_pruned` with ``keep=`` :meth:`PrunerSession.decide`) the dropped
tokens leave the sequence and the KV cache. With several layers, a later head keeps from the tokens the
earlier ones kept (masks multiply).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.adapters.base import language_model
from ..engine.capture import batched_attention_rows, biasing_keys, observing

RESIDUAL_SCALES = ("raw", "standardize", "log")


@dataclass(frozen=True)
class PrunerSpec:
    """Shape and residual settings of a :class:`LearnedPruner` (``layers``: the decoder layers K)."""

    layers: tuple[int, ...]
    hidden_size: int
    dim: int = 64
    n_heads: int = 4
    use_attn_residual: bool = False
    attn_residual_weight: float = 0.5
    learnable_attn_weight: bool = False
    residual_scale: str = "standardize"

    def __post_init__(self):
        if not self.layers or any(int(k) < 1 for k in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct decoder layers ≥ 1, got {list(self.layers)}")
        if self.residual_scale not in RESIDUAL_SCALES:
            raise ValueError(f"residual_scale must be one of {RESIDUAL_SCALES}, got {self.residual_scale!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads})")
        object.__setattr__(self, "layers", tuple(sorted(int(k) for k in self.layers)))

    def to_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}


def scale_residual(attention: torch.Tensor, scale: str) -> torch.Tensor:
    """``g(a)`` of the module docstring for ``attention [B, V]`` (rows sum to at most 1)."""
    a = attention.float()
    if scale == "raw":
        return a
    if scale == "standardize":
        return (a - a.mean(-1, keepdim=True)) / (a.std(-1, keepdim=True, unbiased=False) + 1e-6)
    if scale == "log":
        return torch.log(a.shape[-1] * a + 1e-6)
    raise ValueError(f"residual_scale must be one of {RESIDUAL_SCALES}, got {scale!r}")


class VisionPrunerHead(nn.Module):
    """Keep logits ``ℓ [B, V]`` of one layer (module docstring) from ``vision [B, V, D]``, ``embeddings
    [B, N, D]`` with ``question [B, N]`` (bool, at least one True per row) and, with the residual on,
    ``attention [B, V]``. With ``use_attn_residual`` False the attention is not read."""

    def __init__(self, hidden_size: int, *, dim: int = 64, n_heads: int = 4, use_attn_residual: bool = False,
                 attn_residual_weight: float = 0.5, learnable_attn_weight: bool = False,
                 residual_scale: str = "standardize"):
        super().__init__()
        self.use_attn_residual, self.residual_scale = bool(use_attn_residual), residual_scale
        self.norm_vision = nn.LayerNorm(hidden_size)
        self.project = nn.Linear(hidden_size, dim)
        self.norm_question = nn.LayerNorm(hidden_size)
        self.cross = nn.MultiheadAttention(dim, n_heads, kdim=hidden_size, vdim=hidden_size, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        weight = torch.tensor(float(attn_residual_weight))
        if use_attn_residual and learnable_attn_weight:
            self.attn_residual_weight = nn.Parameter(weight)
        else:
            self.register_buffer("attn_residual_weight", weight)

    def forward(self, vision: torch.Tensor, embeddings: torch.Tensor, question: torch.Tensor,
                attention: torch.Tensor | None = None) -> torch.Tensor:
        if not bool(question.any(-1).all()):
            raise ValueError("every prompt needs at least one question token")
        u = self.project(self.norm_vision(vision))
        q = self.norm_question(embeddings)
        c, _ = self.cross(u, q, q, key_padding_mask=~question, need_weights=False)
        logits = self.mlp(u + c).squeeze(-1)
        if self.use_attn_residual:
            if attention is None:
                raise ValueError("the attention residual is on but no attention was given")
            logits = logits + self.attn_residual_weight * scale_residual(attention, self.residual_scale)
        return logits


def gumbel_keep(logits: torch.Tensor, *, tau: float, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_mask, soft)`` ``[B, V]``: the straight-through Gumbel sample of the module docstring as key
    biases (0 kept, −∞ dropped, gradient through ``log s``) and its soft probabilities ``s``."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp(1e-9, 1 - 1e-9)
    noise = torch.log(u) - torch.log1p(-u)  # G₁ − G₂ ~ Logistic(0, 1)
    z = (logits + noise.to(logits.device)) / tau
    soft = torch.sigmoid(z)
    log_soft = F.logsigmoid(z)
    hard = torch.where(z > 0, torch.zeros_like(z), torch.full_like(z, float("-inf")))
    return hard + log_soft - log_soft.detach(), soft


def keep_indices(logits: torch.Tensor | np.ndarray, budget: int) -> np.ndarray:
    """Sorted indices ``[budget]`` of the ``budget`` highest logits ``[V]`` (ties: the lower index)."""
    from .scorers import keep_indices as top

    return top(np.asarray(torch.as_tensor(logits).detach().double().cpu()), budget)


class LearnedPruner(nn.Module):
    """One :class:`VisionPrunerHead` per decoder layer of ``spec.layers``."""

    def __init__(self, spec: PrunerSpec):
        super().__init__()
        self.spec = spec
        self.heads = nn.ModuleDict({
            str(k): VisionPrunerHead(spec.hidden_size, dim=spec.dim, n_heads=spec.n_heads,
                                     use_attn_residual=spec.use_attn_residual,
                                     attn_residual_weight=spec.attn_residual_weight,
                                     learnable_attn_weight=spec.learnable_attn_weight,
                                     residual_scale=spec.residual_scale)
            for k in spec.layers})

    @property
    def layers(self) -> tuple[int, ...]:
        return self.spec.layers

    def residual_weights(self) -> dict[int, float]:
        """``{K: w}`` of each head."""
        return {int(k): float(h.attn_residual_weight.detach()) for k, h in self.heads.items()}

    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        """Weights and spec (and ``metadata``) in one safetensors file."""
        from safetensors.torch import save_file

        meta = {"spec": json.dumps(self.spec.to_dict(), sort_keys=True),
                "metadata": json.dumps(metadata or {}, sort_keys=True)}
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(path), metadata=meta)


def load_pruner(path: str | Path) -> tuple[LearnedPruner, dict]:
    """``(pruner, metadata)`` saved by :meth:`LearnedPruner.save`, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "spec" not in meta:
        raise ValueError(f"{path}: not a saved pruner (no spec in its metadata)")
    spec = json.loads(meta["spec"])
    pruner = LearnedPruner(PrunerSpec(**{**spec, "layers": tuple(spec["layers"])}))
    pruner.load_state_dict(load_file(str(path)))
    return pruner.eval(), json.loads(meta.get("metadata", "{}"))


def text_vision_attention(rows: torch.Tensor, text_rows: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
    """``a [B, V]``: attention weights ``rows [B, H, R, N]`` of the query rows ``R``, averaged over the heads
    and the rows marked in ``text_rows [B, R]`` (bool), at the key positions ``vision [V]``."""
    w = text_rows.to(rows.dtype)
    per_row = rows[..., vision].mean(1)  # [B, R, V]
    return (per_row * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)


class PrunerSession:
    """The pruner attached to one forward pass or one generation (use as a context manager).

    ``model``: a LLaVA-family model whose text attention is the project's (:func:`vlmattn.engine.inference.load_model`);
    ``vision [V]`` the vision-token positions; ``text_rows [B, N]`` the rows averaged into ``a``;
    ``question [B, N]`` the question tokens. ``mode``:

    * ``"train"``: Gumbel masks (``tau``, ``generator``) applied as key biases; ``soft[K]`` holds ``s``;
    * ``"budget"``: hard masks keeping ``budgets[K]`` tokens at each layer, applied as key biases;
    * ``"decide"``: no masks; :meth:`decide` (one layer) is the ``keep`` callable of
      :func:`vlmattn.engine.pruned.generate_pruned`, with ``budgets[K]`` tokens kept.

    After the pass, ``attention[K]`` is ``a [B, V]`` and ``logits[K]`` is ``ℓ [B, V]``.
    """

    def __init__(self, model, pruner: LearnedPruner, vision: torch.Tensor, text_rows: torch.Tensor,
                 question: torch.Tensor, *, mode: str, budgets: dict[int, int] | None = None, tau: float = 1.0,
                 generator: torch.Generator | None = None):
        if mode not in ("train", "budget", "decide"):
            raise ValueError(f"mode must be train, budget or decide, got {mode!r}")
        if mode != "train" and set(budgets or {}) != set(pruner.layers):
            raise ValueError(f"budgets must give each pruner layer {list(pruner.layers)} its kept count, got {budgets}")
        if mode == "decide" and len(pruner.layers) != 1:
            raise ValueError(f"generation with dropped tokens takes one pruner layer, got {list(pruner.layers)}")
        n_layers = model.config.get_text_config().num_hidden_layers
        if max(pruner.layers) >= n_layers:
            raise ValueError(f"pruner layers {list(pruner.layers)} must lie below the model's {n_layers} decoder "
                             "layers")
        self.model, self.pruner, self.mode = model, pruner, mode
        self.vision, self.text_rows, self.question = vision, text_rows.bool(), question.bool()
        self.budgets, self.tau, self.generator = dict(budgets or {}), tau, generator
        self.embeddings: torch.Tensor | None = None
        self.attention: dict[int, torch.Tensor] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.soft: dict[int, torch.Tensor] = {}
        self.masks: dict[int, torch.Tensor] = {}  # cumulative vision-key biases (log masks) from layer K on
        self._stack = contextlib.ExitStack()

    # --- hooks --------------------------------------------------------------------------------------
    def _grab(self, module, args, kwargs):
        if self.embeddings is None:
            self.embeddings = kwargs["inputs_embeds"].detach()

    @torch.no_grad()
    def _observe(self, layer, query, key, attention_mask, scaling, groups, window):
        if layer + 1 not in self.pruner.layers or query.shape[2] == 1 or layer + 1 in self.attention:
            return
        rows = torch.nonzero(self.text_rows.any(0)).flatten().to(query.device)
        a = batched_attention_rows(query.detach(), key.detach(), attention_mask, scaling, rows, groups, window)
        self.attention[layer + 1] = text_vision_attention(a, self.text_rows[:, rows.cpu()].to(a.device),
                                                          self.vision.to(a.device))

    def _head_logits(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        if self.embeddings is None:
            raise RuntimeError("the language model's input embeddings were not seen before the pruner layer")
        head = self.pruner.heads[str(layer)]
        attention = self.attention.get(layer) if head.use_attn_residual else None
        if head.use_attn_residual and attention is None:
            raise RuntimeError(f"layer {layer - 1}'s attention was not observed (is the model's text attention "
                               "the project's?)")
        logits = head(hidden[:, self.vision.to(hidden.device)].float(), self.embeddings.float(),
                      self.question.to(hidden.device), attention)
        self.logits[layer] = logits
        return logits

    def _previous_mask(self, layer: int) -> torch.Tensor | None:
        earlier = [k for k in self.masks if k < layer]
        return self.masks[max(earlier)] if earlier else None

    def _layer(self, module, args, kwargs):
        layer = module.self_attn.layer_idx
        hidden = args[0] if args else kwargs["hidden_states"]
        if layer not in self.pruner.layers or hidden.shape[1] == 1 or layer in self.masks:
            return None
        logits = self._head_logits(layer, hidden)
        before = self._previous_mask(layer)
        if self.mode == "train":
            mask, self.soft[layer] = gumbel_keep(logits, tau=self.tau, generator=self.generator)
        else:
            ranked = logits.detach() if before is None else logits.detach() + before
            mask = torch.full_like(logits, float("-inf"))
            for b in range(len(mask)):
                mask[b, torch.as_tensor(keep_indices(ranked[b].nan_to_num(neginf=-1e30), self.budgets[layer]))] = 0.0
        self.masks[layer] = mask if before is None else before + mask
        return None

    def kept(self, layer: int) -> torch.Tensor:
        """``[B, V]`` bool: the vision tokens kept from ``layer`` on (after the pass)."""
        return torch.isfinite(self.masks[layer].detach())

    def _key_biases(self, layer: int, n_keys: int) -> torch.Tensor | None:
        mask = self._previous_mask(layer + 1)  # the log mask of the last pruner layer ≤ layer
        if mask is None:
            return None
        zeros = torch.zeros(mask.shape[0], n_keys, dtype=mask.dtype, device=mask.device)
        return zeros.index_copy(1, self.vision.to(mask.device), mask)

    # --- inference in generate_pruned ---------------------------------------------------------------
    def decide(self, hidden: torch.Tensor) -> np.ndarray:
        """Kept vision-token indices for :func:`~vlmattn.engine.pruned.generate_pruned` (``mode="decide"``,
        batch of one): the ``budgets[K]`` highest logits at the pruner's layer."""
        (layer,) = self.pruner.layers
        with torch.no_grad():
            logits = self._head_logits(layer, hidden)
        return keep_indices(logits[0], self.budgets[layer])

    def __enter__(self):
        text = language_model(self.model)
        self._stack.enter_context(observing(self._observe))
        h = text.register_forward_pre_hook(self._grab, with_kwargs=True)
        self._stack.callback(h.remove)
        if self.mode != "decide":
            for k in self.pruner.layers:
                h = text.layers[k].register_forward_pre_hook(self._layer, with_kwargs=True)
                self._stack.callback(h.remove)
            self._stack.enter_context(biasing_keys(self._key_biases))
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False


def prompt_masks(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_token_id: int,
                 prompt_lengths: Sequence[int] | torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(vision [V], text_rows [B, N], question [B, N])`` of a batch ``input_ids [B, N]``: the vision-token
    positions (the same in every row, else ValueError), the prompt's text tokens (not vision, not padding,
    before ``prompt_lengths[b]``, default N: an answer appended for training is not part of the prompt)
    and the question tokens (text after the last vision token, before the prompt's end)."""
    is_vision = input_ids == image_token_id
    if not bool(is_vision.any(1).all()) or not bool((is_vision == is_vision[:1]).all()):
        raise ValueError("every prompt of the batch must hold its vision tokens at the same positions")
    vision = torch.nonzero(is_vision[0]).flatten()
    n = input_ids.shape[1]
    lengths = torch.full((len(input_ids),), n) if prompt_lengths is None else torch.as_tensor(prompt_lengths)
    pos = torch.arange(n)[None, :]
    in_prompt = pos < lengths[:, None].cpu()
    if attention_mask is not None:
        in_prompt &= attention_mask.bool().cpu()
    text_rows = in_prompt & ~is_vision.cpu()
    question = text_rows & (pos > int(vision[-1]))
    return vision, text_rows, question


def evaluation_session(lm, pruner: LearnedPruner, inputs, budget: int) -> PrunerSession:
    """A ``"decide"`` :class:`PrunerSession` for one prompt (``inputs``: :func:`vlmattn.engine.inference.model_inputs`),
    keeping ``budget`` vision tokens at the pruner's layer."""
    vision, text_rows, question = prompt_masks(inputs["input_ids"].cpu(), inputs.get("attention_mask"),
                                               lm.model.config.image_token_id)
    (layer,) = pruner.layers
    return PrunerSession(lm.model, pruner, vision, text_rows, question, mode="decide", budgets={layer: budget})
