"""Rollout maps over the vision tokens: how much each vision token feeds an answer token, through the
language model, through the vision encoder, or both.

Notation: ``T`` decode steps, ``L`` language-model layers, ``H`` heads, ``V`` vision tokens
(:attr:`AttentionSample.vision_index`), ``P`` encoder patches, ``K = N + T − 1`` keys. A map is a float64
``[V]`` vector renormalised to sum 1; it is NaN everywhere when its mass on the vision tokens is 0.

* LLM rollout (``extraction.llm_rollout``; :class:`vlmattn.engine.capture.RolloutAccumulator`):
  ``R_L = Ã_L ··· Ã_1``, ``Ã_l = a·I + (1−a)·mean_h A_l``; row ``t`` of ``rollout_decode`` ``[T, K]`` is
  ``R_L[N−1+t, :]``, the query that predicts generated token ``t``::

      llm[v] = R_L[N−1+t, vision_index[v]] / Σ_u R_L[N−1+t, vision_index[u]]

* Encoder token importance (``extraction.vision_encoder``, with its rollout): the last encoder
  layer's rollout row ``r[p]`` (``rollout_cls[-1]``, CLS's row, for ``source="cls"`` when the encoder
  has a CLS token; otherwise ``rollout_received[-1]``, the mean over the encoder's query rows), summed
  over the patches that feed each LLM vision token (``patch_token[p]``: one patch per token for
  LLaVA, the ``2×2`` merged patches for Qwen)::

      enc[v] = Σ_{p: patch_token[p] = v} r[p]  /  Σ_{p: patch_token[p] ≥ 0} r[p]

* ``seed``: the answer row's attention averaged over layers and heads, times the encoder importance::

      seed[v] ∝ (1/(L·H)) Σ_{l,h} decode[t, l, h, vision_index[v]] · enc[v]

* ``llm_x_encoder``: ``full[v] ∝ llm[v] · enc[v]``.

Nothing here imports torch.
"""

from __future__ import annotations

import numpy as np

from .store import AttentionSample

SOURCES = ("cls", "received")


def _normalise(x: np.ndarray) -> np.ndarray:
    """``x / Σ x`` in float64, NaN everywhere when ``Σ x`` is 0."""
    x = np.asarray(x, np.float64)
    total = x.sum()
    return x / total if total > 0 else np.full(x.shape, np.nan)


def _step(sample: AttentionSample, step: int) -> int:
    """``step`` as an index ``0 … T−1`` (negative counts from the end)."""
    n_steps = sample.n_steps
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not -n_steps <= step < n_steps:
        raise ValueError(f"step must be an integer in [-{n_steps}, {n_steps}) for a sample of {n_steps} steps, "
                         f"got {step!r}")
    return int(step) % n_steps


def llm_rollout_map(sample: AttentionSample, step: int) -> np.ndarray:
    """``[V]``: the language-model rollout row of decode step ``step`` on the vision tokens, renormalised.

    Raises ValueError when the sample has no rollout (extracted without ``extraction.llm_rollout``).
    """
    if sample.rollout_decode is None:
        raise ValueError("the sample has no language-model rollout (/attention/rollout_decode); "
                         "extract it with extraction.llm_rollout: true")
    row = np.asarray(sample.rollout_decode[_step(sample, step)], np.float64)
    return _normalise(row[sample.vision_index])


def encoder_token_importance(sample: AttentionSample, source: str) -> np.ndarray:
    """``[V]``: the vision encoder's last-layer rollout summed over each LLM vision token's patches,
    renormalised (see the module docstring).

    ``source``: ``"cls"`` for CLS's rollout row (encoders with a CLS token; the others fall back to
    ``"received"``), ``"received"`` for the rollout averaged over the encoder's query rows.
    Raises ValueError when the sample has no vision-encoder data or no encoder rollout.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    ve = sample.vision_encoder
    if ve is None:
        raise ValueError("the sample has no vision-encoder attention (/vision_encoder); "
                         "extract it with extraction.vision_encoder.enabled: true")
    if not ve.has_rollout:
        raise ValueError("the sample has no vision-encoder rollout; "
                         "extract it with extraction.vision_encoder.rollout: true")
    use_cls = source == "cls" and ve.rollout_cls.shape[-1] > 0
    r = np.asarray((ve.rollout_cls if use_cls else ve.rollout_received)[-1], np.float64)
    token = np.asarray(ve.patch_token)
    n_tokens = len(sample.vision_index)
    if r.shape != token.shape:
        raise ValueError(f"vision-encoder rollout has {r.shape[-1]} patches but patch_token {token.shape[0]}")
    if token.max(initial=-1) >= n_tokens:
        raise ValueError(f"patch_token refers to vision token {int(token.max())} of {n_tokens}")
    fed = token >= 0
    return _normalise(np.bincount(token[fed], weights=r[fed], minlength=n_tokens))


def seed_rollout_map(sample: AttentionSample, step: int, source: str) -> np.ndarray:
    """``[V]``: decode row ``step`` averaged over layers and heads, on the vision tokens, times
    :func:`encoder_token_importance` (``source``), renormalised."""
    attention = np.asarray(sample.decode_vision[_step(sample, step)], np.float64).mean(axis=(0, 1))
    return _normalise(attention * encoder_token_importance(sample, source))


def full_rollout_map(sample: AttentionSample, step: int, source: str) -> np.ndarray:
    """``[V]``: :func:`llm_rollout_map` times :func:`encoder_token_importance` (``source``), renormalised."""
    return _normalise(llm_rollout_map(sample, step) * encoder_token_importance(sample, source))
