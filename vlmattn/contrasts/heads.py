"""Per-head contrast: which (layer, head) of the language model puts more attention on a region of
interest (ROI) in condition A than in condition B, over P pairs.

For a sample with pooled maps ``p [L, H, V]`` (:func:`maps.pooled_maps`: step-pooled, renormalised
over the kept vision tokens unless ``renormalize`` is false) and the ROI's token mask ``R``
(:func:`vlmattn.maps.box_mask`: tokens whose centre lies in the box, half-open; an ROI
holding no centre falls back to the token under its centre), the ROI mass is

    m[l, h] = Σ_{v ∈ R} p[l, h, v]            (∈ [0, 1] for renormalised maps)

— the ``mass`` of :func:`vlmattn.metrics.spatial.moments`, the same figure the spatial metric reports
per region. An undefined map (NaN, see :mod:`vlmattn.maps`) gives m = NaN, and that pair is
left out of the cell's statistics. With ``m_a[i]``, ``m_b[i]`` of pair i, :func:`head_contrast`
tabulates ``d[i, l, h] = m_a[i, l, h] − m_b[i, l, h]`` with :func:`vlmattn.contrasts.stats.contrast_table`
(paired bootstrap interval of mean d, sign-flip p, Benjamini–Hochberg over the L·H heads, Cohen's d_z,
rank 1 = the largest mean d).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..maps import box_mask, moments
from ..store import AttentionSample
from .pairs import pair_roi, paired, pooled_maps, roi_box, sink_keep
from .stats import contrast_table

COLUMNS = ["layer", "head", "n_pairs", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "p_exact", "p_adj",
           "effect_size", "significant", "rank"]


def roi_mass(sample: AttentionSample, roi_box_fraction, *, step_pooling: str, renormalize: bool,
             min_vision_share: float, keep: np.ndarray | None = None) -> np.ndarray:
    """``m [L, H]``: attention mass of each (layer, head) on the vision tokens whose centres lie in
    ``roi_box_fraction = (x0, y0, x1, y1)`` (image fractions; or a quadrant name), of the step-pooled
    map (:func:`maps.pooled_maps` with ``step_pooling``, ``renormalize``, ``min_vision_share``, ``keep``).
    NaN where the map is undefined."""
    p = pooled_maps(sample, step_pooling=step_pooling, renormalize=renormalize, min_vision_share=min_vision_share,
                    keep=keep)
    mask = box_mask(sample, roi_box(roi_box_fraction))
    return moments(p, sample.token_centres.astype(np.float64), mask)["mass"]


def roi_masses(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], roi, *,
               step_pooling: str, renormalize: bool, min_vision_share: float, exclude_sinks: bool = False,
               sink_rule: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(m_a [P, L, H], m_b [P, L, H])``: :func:`roi_mass` of each pair's A and B sample.

    The samples are consumed pair by pair (generators reading one file at a time keep memory flat);
    each sample's sink tokens are its own (:func:`maps.sink_keep`). Raises ValueError when the two
    iterables differ in length, are empty, or a pair differs in layers, heads or token grid."""
    out_a, out_b = [], []
    for sa, sb in paired(samples_a, samples_b):
        box = pair_roi(sa, sb, roi)
        for s, out in ((sa, out_a), (sb, out_b)):
            out.append(roi_mass(s, box, step_pooling=step_pooling, renormalize=renormalize,
                                min_vision_share=min_vision_share, keep=sink_keep(s, exclude_sinks, sink_rule)))
    return np.stack(out_a), np.stack(out_b)


def head_contrast(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], roi, *,
                  step_pooling: str, renormalize: bool, min_vision_share: float, confidence: float,
                  n_resamples: int, seed: int, alpha: float, method: str, alternative: str = "two-sided",
                  exclude_sinks: bool = False, sink_rule: dict | None = None) -> pd.DataFrame:
    """Contrast of the ROI mass, A − B, per (layer, head) over the pairs ``zip(samples_a, samples_b)``.

    Parameters
    ----------
    samples_a, samples_b : iterables of AttentionSample, one per pair, in pair order
    roi : quadrant name, box ``[x0, y0, x1, y1]`` in image fractions, or ``"object"`` (per pair, the
        objects of A that B lacks: :func:`maps.pair_roi`)
    step_pooling, renormalize, min_vision_share, exclude_sinks, sink_rule
        Of the maps (:func:`roi_masses`).
    confidence, n_resamples, seed, alpha, method, alternative
        Of :func:`vlmattn.contrasts.stats.contrast_table`.

    Returns
    -------
    pandas.DataFrame
        L·H rows (layer-major), columns :data:`COLUMNS` (see :func:`stats.contrast_table`): the mean
        ROI mass in A and B, ``diff`` = mean paired difference with its bootstrap interval, sign-flip
        ``p``, BH ``p_adj`` over the L·H heads, ``effect_size`` (d_z), ``significant = p_adj < alpha``,
        ``rank`` (1 = largest diff), ``n_pairs`` (pairs with both maps defined).
    """
    a, b = roi_masses(samples_a, samples_b, roi, step_pooling=step_pooling, renormalize=renormalize,
                      min_vision_share=min_vision_share, exclude_sinks=exclude_sinks, sink_rule=sink_rule)
    return contrast_table(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed, alpha=alpha,
                          method=method, alternative=alternative)[COLUMNS]


def analyse(a, b, options: dict, first) -> dict:
    """The ``heads`` analysis of :mod:`.analyses`: :func:`head_contrast` of the pairs."""
    o = options
    return {"heads": head_contrast(a(), b(), o["roi"], **o["maps"], **o["statistics"])}
