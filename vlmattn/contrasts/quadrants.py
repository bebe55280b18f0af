"""Quadrant shift: how the attention distribution over the four image quadrants moves from
condition B to condition A.

Each vision token belongs to exactly one quadrant, by its centre (x, y) ∈ [0, 1]²
(:func:`vlmattn.maps.quadrant_of`: the 0.5 lines belong to the right / bottom halves), so
the quadrants partition the tokens. For a map ``p [..., V]`` the quadrant distribution is

    q[..., k] = Σ_{v ∈ Q_k} p[..., v] / Σ_v p[..., v],   k over :data:`QUADRANTS` (top_left,
                                                          top_right, bottom_left, bottom_right),

four masses summing to 1 (NaN for an undefined map). A sample's map is pooled before: steps
(:func:`maps.pooled_maps`), then heads (``head_pooling``: nan-aware mean or max, renormalised,
:func:`vlmattn.maps.pool_heads`), then — unless ``per_layer`` — layers (nan-aware mean, renormalised).
:func:`quadrant_shift` tabulates the paired differences ``q_a − q_b`` per (layer, quadrant) with
:func:`vlmattn.contrasts.stats.contrast_table` (BH over all the table's cells).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..maps import QUADRANTS, pool_heads, pool_maps, quadrant_of
from ..store import AttentionSample
from .pairs import paired, pooled_maps, sink_keep
from .stats import contrast_table

COLUMNS = ["layer", "quadrant", "n_pairs", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "p_exact", "p_adj",
           "effect_size", "significant", "rank"]
QUADRANT_NAMES = tuple(QUADRANTS)


def quadrant_index(centres: np.ndarray) -> np.ndarray:
    """``k [V]`` (int): quadrant of each token centre ``centres [V, 2]`` (x, y), an index into
    :data:`QUADRANT_NAMES`."""
    return np.array([QUADRANT_NAMES.index(quadrant_of(x, y)) for x, y in np.asarray(centres, np.float64)],
                    dtype=np.int64)


def quadrant_masses(p: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``q [..., 4]``: the share of map ``p [..., V]`` in each quadrant (``index [V]`` from
    :func:`quadrant_index`), normalised to sum 1; NaN where p is NaN or sums to 0."""
    p = np.asarray(p, np.float64)
    onehot = np.eye(len(QUADRANT_NAMES))[np.asarray(index)]  # [V, 4]
    m = p @ onehot
    total = m.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, m / total, np.nan)


def sample_quadrants(sample: AttentionSample, *, step_pooling: str, renormalize: bool, min_vision_share: float,
                     head_pooling: str, per_layer: bool, keep: np.ndarray | None = None) -> np.ndarray:
    """``q [L', 4]`` of one sample: L' = L with ``per_layer``, else 1 (layers pooled)."""
    p = pooled_maps(sample, step_pooling=step_pooling, renormalize=renormalize, min_vision_share=min_vision_share,
                    keep=keep)  # [L, H, V]
    p = pool_heads(p, head_pooling, renormalize)  # [L, V]
    if not per_layer:
        p = pool_maps(p, "mean", 0, renormalize)[None]  # [1, V]
    return quadrant_masses(p, quadrant_index(sample.token_centres))


def quadrant_shift(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], *,
                   step_pooling: str, renormalize: bool, min_vision_share: float, head_pooling: str,
                   per_layer: bool, confidence: float, n_resamples: int, seed: int, alpha: float, method: str,
                   alternative: str = "two-sided", exclude_sinks: bool = False,
                   sink_rule: dict | None = None) -> pd.DataFrame:
    """Paired contrast of the quadrant distributions, A − B, over ``zip(samples_a, samples_b)``.

    Returns
    -------
    pandas.DataFrame
        One row per (layer, quadrant), layer-major; ``layer`` is ``"all"`` (layers pooled) or the layer
        index (``per_layer``). Columns :data:`COLUMNS`, as :func:`stats.contrast_table`'s with
        ``quadrant`` for ``head``: ``mean_a`` / ``mean_b`` are the mean quadrant masses (over the
        complete pairs), ``diff`` their paired mean difference (the four diffs of a layer sum to 0
        when every pair is complete).
    """
    qa, qb = [], []
    for sa, sb in paired(samples_a, samples_b):
        for s, out in ((sa, qa), (sb, qb)):
            out.append(sample_quadrants(s, step_pooling=step_pooling, renormalize=renormalize,
                                        min_vision_share=min_vision_share, head_pooling=head_pooling,
                                        per_layer=per_layer, keep=sink_keep(s, exclude_sinks, sink_rule)))
    a, b = np.stack(qa), np.stack(qb)  # [P, L', 4]
    layers = np.arange(a.shape[1]) if per_layer else np.array(["all"])
    df = contrast_table(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed, alpha=alpha,
                        method=method, alternative=alternative, layers=layers, heads=list(QUADRANT_NAMES))
    return df.rename(columns={"head": "quadrant"})[COLUMNS]


def analyse(a, b, options: dict, first) -> dict:
    """The ``quadrants`` analysis of :mod:`.analyses`: :func:`quadrant_shift` pooled over layers, then
    per layer (two BH families)."""
    o = options
    tables = [quadrant_shift(a(), b(), **o["maps"], head_pooling=o["head_pooling"], per_layer=per_layer,
                             **o["statistics"])
              for per_layer in (False, True)]
    return {"quadrants": pd.concat(tables, ignore_index=True)}
