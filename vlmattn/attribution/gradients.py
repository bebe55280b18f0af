"""Gradient attributions of a VLM's answer to its vision tokens: attention × gradient (and its rollout),
integrated gradients and saliency, with the attention and the rollout of the same pass.

The quantity explained is the log-probability of the answer token ``y`` (the first generated token)
given the prompt of ``N`` tokens, read from the logits at the last prompt position ``q = N − 1``:

    f = log softmax(logits[q])[y]

One pass over the prompt followed by ``y`` (``M = N + 1`` positions; by causality nothing at ``q`` sees
``y``) runs through the project's attention function with kept attention
(:func:`vlmattn.engine.capture.keeping_attention`), so that ``A_l [H, M, M]`` of every decoder layer ``l`` is
part of the graph, and one backward pass gives ``∇A_l = ∂f/∂A_l``. Then (Chefer et al. 2021, generic
attention explainability)

    Ā_l = mean_h (∇A_l ⊙ A_l)⁺                        relevance of layer l       [M, M]
    R_0 = I,  R_l = R_{l−1} + Ā_l · R_{l−1}             its rollout across layers  [M, M]

and, from the same weights, the attention rollout of :mod:`vlmattn.rollout`'s convention
(``Ã_l = a·I + (1−a)·mean_h A_l``, ``R_l = Ã_l · R_{l−1}``, ``a = ROLLOUT_RESIDUAL``). Maps over the
``V`` vision tokens (the adapter's layout, in grid order) are row ``q`` at the vision columns.

Integrated gradients and saliency are taken with respect to the vision-token embeddings the language
model receives (``x [1, V, D]``, the projector's output), through captum: :class:`VisionTokenFunction`
is ``f`` as a function of ``x`` with everything else fixed (the text embeddings and every other input the
decoder received in the model's own forward pass). IG from a baseline ``b``,

    IG_vd = (x_vd − b_vd) · ∫₀¹ ∂f(b + α(x − b))/∂x_vd dα,     Σ_vd IG_vd ≈ f(x) − f(b)    (completeness)

with ``b`` the embeddings of a blank image (:func:`blank_inputs`: pixel values 0, the processor's mean
colour, 1e-6 for Idefics3 and SmolVLM; ``baseline="blank"``) or ``b = 0`` (``"zero"``). The zero path
passes through embeddings of
vanishing norm, where the decoder's RMS norms change fastest, and the quadrature's sum then misses
``f(x) − f(0)`` by far more than it does from the blank image. Saliency is ``S_vd = |∂f/∂x_vd|``; a
token's score sums over the ``D`` features (IG signed, saliency ≥ 0).

In pixel space (:class:`PixelFunction`, :func:`pixel_attribution`; images fed as one pixel tensor
``[1, C, H, W]``, or ``[1, tiles, C, H, W]`` for the tiled families), IG of ``f`` with respect to the pixel
values, from the blank image, is mapped to the vision tokens by summing it over the channels and over
each encoder patch of each tile, then over the patches that feed each token (:func:`token_sums`, the
adapter's patch layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..engine.adapters.base import language_model
from ..engine.capture import keeping_attention
from ..engine.inference import LoadedModel, extended_inputs
from ..store import ROLLOUT_RESIDUAL


@dataclass
class AnswerPass:
    """One differentiable pass over the prompt and the answer token (``M = N + 1`` positions).

    log_prob: ``f``; probability: ``exp f``; query: ``q = N − 1``; answer: the position of the answer
    token (``N``). attention ``[L, M, M]`` float64: head-mean weights; query_attention ``[L, H, M]``: row
    ``q`` of every head; relevance ``[L, M, M]``: ``Ā_l``; hidden ``[L + 1, M, D]`` float64: the decoder's
    hidden states (embeddings first, the last after the final norm, as transformers returns them).
    """

    log_prob: float
    query: int
    answer: int
    attention: np.ndarray
    query_attention: np.ndarray
    relevance: np.ndarray
    hidden: np.ndarray

    @property
    def probability(self) -> float:
        return float(np.exp(self.log_prob))


def answer_log_prob(logits: torch.Tensor, target: int) -> torch.Tensor:
    """``log softmax(logits)[..., target]`` in float32: ``[..., vocab]`` → ``[...]``."""
    return torch.log_softmax(logits.float(), dim=-1)[..., target]


def answer_pass(lm: LoadedModel, inputs, target: int) -> AnswerPass:
    """The pass of the module docstring for the prompt ``inputs`` (the processor's tensors, batch of 1) and
    the answer token id ``target``."""
    n = int(inputs["input_ids"].shape[1])
    ids = torch.cat([inputs["input_ids"][0].cpu(), torch.tensor([int(target)])])
    run = extended_inputs(inputs, ids)
    kept: dict = {}
    # the token embeddings enter the graph whether or not the weights require grad; only the gradients
    # with respect to the kept weights are computed (no parameter gradient is accumulated)
    embed = lm.model.get_input_embeddings().register_forward_hook(
        lambda module, args, out: out if out.requires_grad else out.detach().requires_grad_(True))
    try:
        with torch.enable_grad(), keeping_attention(kept):
            out = lm.model(**run, use_cache=False, output_hidden_states=True)
            f = answer_log_prob(out.logits[0, n - 1], int(target))
            layers = sorted(kept)
            grads = torch.autograd.grad(f, [kept[layer] for layer in layers])
    finally:
        embed.remove()
    attn = torch.stack([kept[layer][0].detach() for layer in layers])  # [L, H, M, M]
    grad = torch.stack([g[0] for g in grads])
    relevance = (grad * attn).clamp(min=0).mean(1)
    hidden = torch.stack([h[0].detach().double() for h in out.hidden_states])
    return AnswerPass(
        log_prob=float(f.detach()),
        query=n - 1,
        answer=n,
        attention=attn.mean(1).double().cpu().numpy(),
        query_attention=attn[:, :, n - 1].double().cpu().numpy(),
        relevance=relevance.double().cpu().numpy(),
        hidden=hidden.cpu().numpy(),
    )


def relevance_rollout(relevance: np.ndarray) -> np.ndarray:
    """``R_L`` of ``R_0 = I, R_l = R_{l−1} + Ā_l R_{l−1}`` for ``relevance [L, M, M]`` → ``[M, M]``."""
    r = np.eye(relevance.shape[-1])
    for a in relevance:
        r = r + a @ r
    return r


def attention_rollout(attention: np.ndarray, residual: float = ROLLOUT_RESIDUAL) -> np.ndarray:
    """``R_L`` of ``Ã_l = a·I + (1−a)·A_l``, ``R_l = Ã_l R_{l−1}``, ``R_0 = I`` for head-mean weights
    ``attention [L, M, M]`` (rows sum to 1) → ``[M, M]``."""
    eye = np.eye(attention.shape[-1])
    r = eye
    for a in attention:
        r = (residual * eye + (1 - residual) * a) @ r
    return r


class _Captured(Exception):
    pass


class VisionTokenFunction:
    """``f(x)``: the answer token's log-probability as a function of the vision-token embeddings.

    Built from one forward pass of the model on ``inputs`` (no cache), whose text decoder call is
    recorded (the embeddings it receives and every other argument) and not run. ``__call__(x [S, V, D]) →
    [S]`` reruns the text decoder and the LM head with rows ``vision_positions [V]`` of the embeddings
    replaced by ``x[s]``, one element at a time (every family's decoder arguments stay as the model made
    them). ``embeddings [1, V, D]`` are the model's own vision-token embeddings (``f(embeddings)`` is the
    answer's log-probability).
    """

    def __init__(self, lm: LoadedModel, inputs, vision_positions: np.ndarray, target: int):
        self.lm, self.target = lm, int(target)
        self.positions = torch.as_tensor(np.asarray(vision_positions, np.int64), device=lm.device)
        self.decoder = language_model(lm.model)
        call = {}

        def grab(module, args, kwargs):
            call.update(kwargs)
            raise _Captured

        handle = self.decoder.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                lm.model(**inputs, use_cache=False)
        except _Captured:
            pass
        finally:
            handle.remove()
        embeds = call.pop("inputs_embeds")
        self.base = embeds.detach()
        self.kwargs = {k: v for k, v in call.items() if k not in ("use_cache", "past_key_values")}
        self.embeddings = self.base[:, self.positions].clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        values = []
        for row in x:
            embeds = self.base.clone()
            embeds[0, self.positions] = row.to(embeds.dtype)
            out = self.decoder(inputs_embeds=embeds, use_cache=False, **self.kwargs)
            logits = self.lm.model.lm_head(out.last_hidden_state[:, -1])
            values.append(answer_log_prob(logits[0], self.target))
        return torch.stack(values)


BASELINES = ("blank", "zero")


def blank_inputs(inputs, value: float = 0.0) -> dict:
    """The processor's tensors with every pixel value ``value``: 0, the normalisation's mean colour
    everywhere (``Adapter.blank_pixel_value``: Idefics3 and SmolVLM drop an image whose pixel values
    are all exactly 0 as batch padding, so theirs is 1e-6)."""
    out = dict(inputs)
    out["pixel_values"] = torch.full_like(inputs["pixel_values"], value)
    return out


@dataclass
class InputAttribution:
    """Integrated gradients and saliency of ``f`` at the vision-token embeddings.

    integrated_gradients ``[V]``: ``Σ_d IG_vd``; saliency ``[V]``: ``Σ_d |∂f/∂x_vd|``; value ``f(x)``,
    baseline_value ``f(b)``; delta: captum's convergence delta ``Σ IG − (f(x) − f(b))``.
    """

    integrated_gradients: np.ndarray
    saliency: np.ndarray
    value: float
    baseline_value: float
    delta: float


class PixelFunction:
    """``f(pixels [S, C, H, W]) → [S]`` (tiled families: ``[S, tiles, C, H, W]``): the answer token's
    log-probability with the image's pixel values replaced, one batched forward pass of the whole model
    over the ``S`` images (the prompt repeated; no cache, only the last logits)."""

    def __init__(self, lm: LoadedModel, inputs, target: int):
        if inputs["pixel_values"].dim() not in (4, 5) or inputs["pixel_values"].shape[0] != 1:
            raise ValueError(f"pixel-space attribution needs pixel values [1, C, H, W] or [1, tiles, C, H, W], got "
                             f"{tuple(inputs['pixel_values'].shape)}")
        self.lm, self.inputs, self.target = lm, dict(inputs), int(target)
        self.pixels = inputs["pixel_values"].detach()

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.shape[0]
        # contiguous: Idefics3 views its pixel_attention_mask
        run = {k: v.expand(n, *v.shape[1:]).contiguous() if torch.is_tensor(v) and v.dim() and v.shape[0] == 1
               else v for k, v in self.inputs.items()}
        run["pixel_values"] = pixels.to(self.pixels.dtype)
        logits = self.lm.model(**run, use_cache=False, logits_to_keep=1).logits[:, -1]
        return answer_log_prob(logits, self.target)


def patch_sums(attribution: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``attribution [C, H, W]`` summed over channels and over the ``H / rows × W / cols`` patch of each cell
    of ``grid = (rows, cols)``: ``[rows · cols]``, row-major. Raises ValueError unless the grid divides ``H × W``."""
    c, h, w = attribution.shape
    rows, cols = (int(x) for x in grid)
    if h % rows or w % cols:
        raise ValueError(f"a {rows}x{cols} token grid does not tile {h}x{w} pixels")
    return attribution.sum(0).reshape(rows, h // rows, cols, w // cols).sum((1, 3)).reshape(-1)


def token_sums(attribution: np.ndarray, grids: np.ndarray, patch_token: np.ndarray, n_tokens: int) -> np.ndarray:
    """``[n_tokens]``: pixel attribution ``[(tiles,) C, H, W]`` summed per encoder patch of each tile
    (:func:`patch_sums` with tile ``i``'s patch grid ``grids[i]``), then per vision token over the patches
    that feed it (``patch_token [P]``, the encoder patches in order, -1 for a patch that feeds none:
    :class:`vlmattn.engine.vision.PatchLayout`)."""
    tiles = attribution.reshape(-1, *attribution.shape[-3:])
    grids = np.asarray(grids, np.int64).reshape(-1, 2)
    if len(tiles) != len(grids):
        raise ValueError(f"{len(tiles)} tiles of pixel values for {len(grids)} encoder images")
    patches = np.concatenate([patch_sums(t, g) for t, g in zip(tiles, grids, strict=True)])
    patch_token = np.asarray(patch_token, np.int64)
    fed = patch_token >= 0
    return np.bincount(patch_token[fed], weights=patches[fed], minlength=n_tokens)


@dataclass
class PixelAttribution:
    """Integrated gradients in pixel space mapped to the tokens: ``tokens [V]`` (:func:`token_sums`), value
    ``f(x)``, baseline_value ``f(blank)``, delta ``Σ IG − (f(x) − f(blank))``."""

    tokens: np.ndarray
    value: float
    baseline_value: float
    delta: float


def pixel_attribution(f: PixelFunction, grids: np.ndarray, patch_token: np.ndarray, *, n_steps: int, batch: int,
                      method: str = "gausslegendre") -> PixelAttribution:
    """IG of ``f`` at its image's pixels from the blank image (pixel values 0) through captum (``batch``
    path points per forward pass), summed per vision token over the encoder patches that feed it
    (:func:`token_sums` with the patch layout's ``grids`` and ``patch_token``)."""
    from captum.attr import IntegratedGradients

    x = f.pixels.float().requires_grad_(True)
    baseline = torch.full_like(x, f.lm.adapter.blank_pixel_value)
    with torch.enable_grad():
        ig, delta = IntegratedGradients(f).attribute(x, baselines=baseline, n_steps=n_steps, method=method,
                                                     internal_batch_size=batch, return_convergence_delta=True)
    with torch.no_grad():
        values = f(torch.cat([x, baseline])).double().cpu().numpy()
    n_tokens = int(np.max(patch_token)) + 1
    return PixelAttribution(tokens=token_sums(ig[0].double().detach().cpu().numpy(), grids, patch_token, n_tokens),
                            value=float(values[0]), baseline_value=float(values[1]),
                            delta=float(delta.detach().double().sum()))


def input_attribution(f, x: torch.Tensor, baseline: torch.Tensor, *, n_steps: int,
                      method: str = "gausslegendre") -> InputAttribution:
    """IG (from ``baseline [1, V, D]``, ``n_steps`` points of captum's ``method``) and saliency of ``f`` at
    ``x [1, V, D]`` through captum; ``f(x [S, V, D]) → [S]`` is any differentiable function, such as a
    :class:`VisionTokenFunction`."""
    from captum.attr import IntegratedGradients, Saliency

    x = x.detach().float().requires_grad_(True)
    baseline = baseline.detach().float()
    with torch.enable_grad():
        ig, delta = IntegratedGradients(f).attribute(x, baselines=baseline, n_steps=n_steps, method=method,
                                                     return_convergence_delta=True)
        sal = Saliency(f).attribute(x, abs=True)
        with torch.no_grad():
            values = f(torch.cat([x, baseline])).double().cpu().numpy()
    return InputAttribution(
        integrated_gradients=ig[0].sum(-1).double().detach().cpu().numpy(),
        saliency=sal[0].sum(-1).double().detach().cpu().numpy(),
        value=float(values[0]),
        baseline_value=float(values[1]),
        delta=float(delta.detach().double().sum()),
    )
