"""Statistics helpers every wing shares: multiple-testing correction (Benjamini–Hochberg), binomial
intervals (Wilson) and the exact McNemar test of paired binary outcomes. Arrays in, arrays out; no
hidden defaults beyond the documented confidence level.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def bh_adjust(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values over all cells.

    With the m non-NaN p-values of ``p`` (all cells, flattened) sorted ``p_(1) ≤ … ≤ p_(m)``:

        p_adj_(k) = min(1, min_{j ≥ k} m · p_(j) / j)

    (:func:`scipy.stats.false_discovery_control` with ``method="bh"``). Rejecting ``p_adj < α``
    controls the false discovery rate at α for independent or positively dependent tests.

    Parameters
    ----------
    p : array ``[...]``
        p-values in [0, 1]; NaN (a cell without a test) is kept NaN and does not count in m.

    Returns
    -------
    p_adj : float64 array ``[...]``, the shape of ``p``.
    """
    try:
        p = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("p must be a numeric array of p-values") from None
    known = ~np.isnan(p)
    if ((p[known] < 0) | (p[known] > 1)).any():
        raise ValueError("p must lie in [0, 1] (NaN for a missing test)")
    out = np.full(p.shape, np.nan)
    if known.any():
        out[known] = stats.false_discovery_control(p[known], method="bh")
    return out


def wilson_interval(successes, n, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion, ``(low, high)`` broadcast over ``successes`` x and
    ``n``: with p̂ = x / n and z the two-sided normal quantile of ``confidence``,

        centre ± half = (x + z²/2) / (n + z²)  ±  z / (n + z²) · √(x (n − x) / n + z² / 4)

    NaN where n = 0. Raises ValueError for x outside 0 … n or a confidence outside (0, 1)."""
    x, n = np.asarray(successes, np.float64), np.asarray(n, np.float64)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if (x < 0).any() or (x > n).any():
        raise ValueError(f"successes must lie in 0 … n, got {successes} of {n}")
    z = stats.norm.ppf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = (x + z**2 / 2) / (n + z**2)
        half = z / (n + z**2) * np.sqrt(np.where(n > 0, x * (n - x) / n, np.nan) + z**2 / 4)
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def mcnemar_exact(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value of the discordant counts b = ``gained``, c = ``lost``:
    ``binomtest(b, b + c, ½)`` (two-sided), 1.0 when b + c = 0."""
    if gained < 0 or lost < 0:
        raise ValueError(f"discordant counts must be non-negative, got {gained} and {lost}")
    if gained + lost == 0:
        return 1.0
    return float(stats.binomtest(int(gained), int(gained + lost), 0.5).pvalue)


def mean_interval(values, *, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values [n]`` (fractional scores such as VQA accuracy, where a
    binomial interval does not apply): x̄ ∓ t_{(1+c)/2, n−1} · s / √n, clipped to [0, 1]; NaN for n < 2."""
    v = np.asarray(values, np.float64)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if v.size < 2:
        return np.nan, np.nan
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(np.clip(v.mean() - half, 0, 1)), float(np.clip(v.mean() + half, 0, 1))


def paired_sign_flip(a, b, *, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided p-value of equal mean scores in paired samples ``a [n]``, ``b [n]`` (per item, e.g. a
    pruned run's VQA accuracy and the unpruned run's): the sign-flip permutation test of the mean
    difference d̄ = mean(a − b), each pair's two scores swapped at random
    (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``; exact when 2ⁿ ≤
    ``n_resamples``, else ``n_resamples`` draws from ``seed``). 1.0 when every difference is 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"a and b must be equally long non-empty 1-D arrays, got shapes {a.shape} and {b.shape}")
    if not np.any(a != b):
        return 1.0
    res = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                 permutation_type="samples", n_resamples=n_resamples, alternative="two-sided",
                                 random_state=np.random.default_rng(seed))
    return float(res.pvalue)
