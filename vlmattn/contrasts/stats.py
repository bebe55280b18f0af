"""Statistics of paired contrasts: condition A against condition B over P pairs, per cell.

Notation: P pairs (e.g. the same synthetic scene with and without an object in the top-left corner),
and a cell shape ``...`` (for :func:`contrast_table` ``[L, H]``: L layers and H heads of the language
model). ``a[i, ...]`` and ``b[i, ...]`` hold one value per pair i and condition (e.g. the attention mass
on the region of interest), and

    d[i, ...] = a[i, ...] − b[i, ...]

is the paired difference. Every function takes arrays with the pair axis first and works cell by cell
(vectorised over cells); the outputs have the cell shape ``...`` (0-d arrays when the inputs are
``[P]``).

**Missing values.** NaN marks a missing value; infinite values are an error. A pair is *complete* in a
cell when both ``a`` and ``b`` are finite there; ``d`` is NaN wherever a pair is incomplete, and every
statistic of a cell uses the complete pairs of that cell only (the others are dropped per cell, so the
number n of pairs used may differ between cells). Means (``mean_a``, ``mean_b``, ``diff``) need n ≥ 1;
the interval, the p-value and the effect size need n ≥ 2, otherwise they are NaN.

**Resampling and seeds.** :func:`bootstrap_ci` calls :func:`scipy.stats.bootstrap` once per cell,
:func:`sign_flip_pvalue` calls :func:`scipy.stats.permutation_test` vectorised over the cells with the
same complete pairs; every call gets a fresh ``numpy.random.default_rng(seed)``, so cells with the
same number of complete pairs share their resamples (common random numbers). A cell's interval is
exactly what scipy returns for that cell alone with ``rng=numpy.random.default_rng(seed)``, whatever
the other cells: the bootstrap is not vectorised over cells because with tied values (distances on a
token grid repeat: 2, √5, ...) the rounding of a batched mean decides which resample means equal the
observed one, and BCa's bias correction with it. The sign-flip test compares with scipy's relative
tolerance of 100 machine epsilons, which rounding in the last digits does not cross; it runs in
chunks of at most ``_MAX_ELEMENTS`` resampled values per call, which bound memory and change no
result. With at most :data:`EXACT_MAX_PAIRS` complete pairs the test enumerates all 2^n sign vectors
(an exact p, whatever ``n_resamples``); :func:`sign_flip_exact` says which cells are exact.

Nothing here has a hidden default: the number of resamples, the seed, the confidence level, the
interval method and the significance level are arguments (keyword-only), set by the caller's config.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy
from scipy import stats

from ..stats import bh_adjust

COLUMNS = ["layer", "head", "n_pairs", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "p_exact", "p_adj",
           "effect_size", "significant", "rank"]
#: Up to this many complete pairs the sign-flip test enumerates all 2^n sign vectors (2^20 ≈ 10^6).
EXACT_MAX_PAIRS = 20
CI_METHODS = ("percentile", "basic", "bca")
ALTERNATIVES = ("two-sided", "greater", "less")

# resampled values (resamples × pairs × cells) per batch of a scipy call, and null-distribution values
# (resamples × cells) per call; they bound memory and change no result
_MAX_ELEMENTS = 1 << 22
_MAX_NULL = 1 << 26
# scipy ≥ 1.15 takes ``rng``; older versions the same Generator as ``random_state``
_RNG_KW = "rng" if tuple(int(x) for x in scipy.__version__.split(".")[:2]) >= (1, 15) else "random_state"


# ------------------------------------------------------------------------------------- validation
def _as_pairs(x, name: str) -> np.ndarray:
    """``x`` as float64 ``[P, ...]`` with P ≥ 1 and no infinite values."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape [P, ...]") from None
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a leading pair axis [P, ...], got a scalar")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no pairs (P = 0)")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values; use NaN for missing values")
    return arr


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


# ---------------------------------------------------------------------------------------- helpers
def _flat(d: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``d [P, ...]`` → ``(d2 [P, C], cell shape)``."""
    return d.reshape(d.shape[0], -1), d.shape[1:]


def _groups(d2: np.ndarray, min_pairs: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cells with the same complete pairs: ``(rows [P] bool, cols [c] int)``, those with ≥ min_pairs."""
    valid = ~np.isnan(d2)
    if valid.all():  # the common case, one group
        if d2.shape[0] >= min_pairs:
            yield valid[:, 0], np.arange(d2.shape[1])
        return
    patterns, inverse = np.unique(valid.T, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for g, rows in enumerate(patterns):
        if rows.sum() >= min_pairs:
            yield rows, np.flatnonzero(inverse == g)


def _chunks(n_cols: int, per_cell: int, limit: int) -> Iterator[slice]:
    """Slices of the ``n_cols`` cells, each at most ``limit // per_cell`` (at least 1) long."""
    size = max(1, limit // max(1, per_cell))
    for start in range(0, n_cols, size):
        yield slice(start, min(start + size, n_cols))


def _count_mean(x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n [C], mean [C])`` over the non-NaN entries of ``x2 [P, C]``; mean NaN where n = 0."""
    valid = ~np.isnan(x2)
    n = valid.sum(axis=0)
    total = np.where(valid, x2, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / n, np.nan)
    return n, mean


def _constant(x2: np.ndarray) -> np.ndarray:
    """``[C]`` bool: all non-NaN entries of the column are equal (True for columns without any)."""
    return np.where(np.isnan(x2), np.inf, x2).min(axis=0) == np.where(np.isnan(x2), -np.inf, x2).max(axis=0)


def _mean(x, axis):
    return np.mean(x, axis=axis)


# ------------------------------------------------------------------------------------- statistics
def paired_differences(a, b) -> np.ndarray:
    """Paired differences ``d = a − b``.

    Parameters
    ----------
    a, b : array ``[P, ...]``
        One value per pair (axis 0) and cell for condition A and condition B; same shape. NaN marks a
        missing value, infinite values are rejected.

    Returns
    -------
    d : float64 array ``[P, ...]``
        ``d[i, ...] = a[i, ...] − b[i, ...]``; NaN where either condition is NaN (an incomplete pair,
        which every statistic of this module then drops for that cell).

    Raises
    ------
    ValueError
        Non-numeric input, no pair axis, P = 0, infinite values, or shapes that differ.
    """
    a = _as_pairs(a, "a")
    b = _as_pairs(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b must have the shape of a {a.shape}, got {b.shape}")
    return a - b


def bootstrap_ci(d, *, confidence: float, n_resamples: int, seed: int, method: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap confidence interval of the mean paired difference, per cell.

    For a cell with n complete pairs ``d_1 … d_n`` the statistic is ``θ = (1/n) Σ_i d_i``; the
    bootstrap draws ``n_resamples`` samples of n pairs with replacement (the same resampled indices
    for every cell with the same number of complete pairs; one scipy call per cell) and returns
    :func:`scipy.stats.bootstrap`'s two-sided
    interval at level ``confidence``:

    * ``percentile``: ``[q_{α/2}, q_{1−α/2}]`` of the bootstrap means θ*_b, α = 1 − confidence;
    * ``basic``: ``[2θ − q_{1−α/2}, 2θ − q_{α/2}]``;
    * ``bca``: bias-corrected and accelerated percentiles (Efron & Tibshirani 1993, 14.3), acceleration
      from the jackknife.

    The interval is marginal (per cell), not adjusted for the number of cells.

    Parameters
    ----------
    d : array ``[P, ...]``
        Paired differences (:func:`paired_differences`); NaN entries are dropped per cell.
    confidence : float in (0, 1)
        Confidence level, e.g. 0.95.
    n_resamples : int ≥ 1
        Bootstrap resamples.
    seed : int ≥ 0
        Seed of ``numpy.random.default_rng``; a cell's interval is scipy's for that cell alone with
        ``rng=default_rng(seed)``.
    method : {"percentile", "basic", "bca"}
        Interval construction.

    Returns
    -------
    low, high : float64 arrays ``[...]``
        Interval bounds. NaN for a cell with fewer than 2 complete pairs; ``low = high = d`` for a cell
        whose complete differences are all equal (the bootstrap distribution is a point there).
    """
    d = _as_pairs(d, "d")
    confidence = _check_fraction(confidence, "confidence")
    n_resamples = _check_int(n_resamples, "n_resamples", 1)
    seed = _check_int(seed, "seed", 0)
    method = _check_choice(method, "method", CI_METHODS)
    d2, shape = _flat(d)
    low = np.full(d2.shape[1], np.nan)
    high = np.full(d2.shape[1], np.nan)
    for rows, cols in _groups(d2, 2):
        x = d2[rows][:, cols]  # [n, c]
        const = _constant(x)
        low[cols[const]] = high[cols[const]] = x[0, const]
        for j in np.flatnonzero(~const):  # one call per cell: its interval is scipy's for it alone
            res = stats.bootstrap((x[:, j],), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                  method=method, **{_RNG_KW: np.random.default_rng(seed)})
            low[cols[j]] = res.confidence_interval.low
            high[cols[j]] = res.confidence_interval.high
    return low.reshape(shape), high.reshape(shape)


def sign_flip_pvalue(d, *, n_resamples: int, seed: int, alternative: str = "two-sided") -> np.ndarray:
    """Paired sign-flip permutation test of ``mean(d) = 0``, per cell.

    Under the null hypothesis the distribution of each paired difference is symmetric about 0, so
    flipping the signs of any subset of the n complete pairs of a cell leaves the distribution of
    ``T = (1/n) Σ_i d_i`` unchanged. The null distribution is ``T*_s = (1/n) Σ_i s_i d_i`` over sign
    vectors ``s ∈ {−1, +1}^n`` (:func:`scipy.stats.permutation_test` with ``permutation_type="samples"``
    on the one sample d):

    * exact when ``n ≤ EXACT_MAX_PAIRS`` or ``2^n ≤ n_resamples`` (:func:`sign_flip_exact`): all 2^n
      sign vectors, ``p_greater = #{s: T*_s ≥ T} / 2^n``, so p can reach 2^−n (3·10⁻⁵ for 15 pairs)
      rather than the Monte-Carlo floor 1 / (n_resamples + 1);
    * otherwise ``n_resamples`` random sign vectors (shared by the cells with the same complete pairs),
      ``p_greater = (#{b: T*_b ≥ T} + 1) / (n_resamples + 1)``;

    ``p_less`` likewise with ≤, and two-sided ``p = min(1, 2 min(p_less, p_greater))`` (scipy's
    definition; for the exact test it equals ``#{s: |T*_s| ≥ |T|} / 2^n`` since the null distribution
    is symmetric). Comparisons allow scipy's relative tolerance of 100 machine epsilons.

    Parameters
    ----------
    d : array ``[P, ...]``
        Paired differences (:func:`paired_differences`); NaN entries are dropped per cell.
    n_resamples : int ≥ 1
        Random sign vectors when the test is not exact (more than ``EXACT_MAX_PAIRS`` pairs).
    seed : int ≥ 0
        Seed of ``numpy.random.default_rng`` (unused by exact cells).
    alternative : {"two-sided", "greater", "less"}
        ``greater``: mean(d) > 0, i.e. A above B.

    Returns
    -------
    p : float64 array ``[...]``
        p-values; NaN for a cell with fewer than 2 complete pairs.
    """
    d = _as_pairs(d, "d")
    n_resamples = _check_int(n_resamples, "n_resamples", 1)
    seed = _check_int(seed, "seed", 0)
    alternative = _check_choice(alternative, "alternative", ALTERNATIVES)
    d2, shape = _flat(d)
    p = np.full(d2.shape[1], np.nan)
    for rows, cols in _groups(d2, 2):
        x = d2[rows][:, cols]  # [n, c]
        n = x.shape[0]
        # scipy enumerates all 2^n sign vectors when n_resamples ≥ 2^n
        n_null = 2 ** n if sign_flip_exact(n, n_resamples) else n_resamples
        for sl in _chunks(len(cols), n_null, _MAX_NULL):
            res = stats.permutation_test((x[:, sl],), _mean, permutation_type="samples", vectorized=True,
                                         n_resamples=n_null, alternative=alternative, axis=0,
                                         batch=max(1, _MAX_ELEMENTS // (n * (sl.stop - sl.start))),
                                         **{_RNG_KW: np.random.default_rng(seed)})
            p[cols[sl]] = res.pvalue
    return p.reshape(shape)


def sign_flip_exact(n_pairs, n_resamples: int):
    """Whether :func:`sign_flip_pvalue` enumerates every sign vector for ``n_pairs`` complete pairs
    (array or int): ``2 ≤ n ≤ EXACT_MAX_PAIRS`` or ``2^n ≤ n_resamples``."""
    n = np.asarray(n_pairs)
    with np.errstate(over="ignore"):
        return (n >= 2) & ((n <= EXACT_MAX_PAIRS) | (np.exp2(np.minimum(n, 1023)) <= n_resamples))


def effect_size(d) -> np.ndarray:
    """Paired standardised effect size (Cohen's d_z), per cell.

        d_z = mean(d) / std(d),   std with ddof = 1,

    over the n complete pairs of the cell.

    Parameters
    ----------
    d : array ``[P, ...]``
        Paired differences (:func:`paired_differences`); NaN entries are dropped per cell.

    Returns
    -------
    d_z : float64 array ``[...]``
        NaN for a cell with fewer than 2 complete pairs or whose complete differences are all equal
        (std = 0).
    """
    d = _as_pairs(d, "d")
    d2, shape = _flat(d)
    n, mean = _count_mean(d2)
    dev = np.where(np.isnan(d2), 0.0, d2 - mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((dev ** 2).sum(axis=0) / (n - 1))
        dz = mean / sd
    dz[(n < 2) | _constant(d2)] = np.nan
    return dz.reshape(shape)


def contrast_table(a, b, *, confidence: float, n_resamples: int, seed: int, alpha: float, method: str,
                   alternative: str = "two-sided", layers: Sequence | None = None,
                   heads: Sequence | None = None) -> pd.DataFrame:
    """Tidy table of the A − B contrast, one row per (layer, head).

    Parameters
    ----------
    a, b : arrays ``[P, L, H]``
        One value per pair, layer and head for condition A and condition B (NaN: missing; a pair is
        used in a cell only when complete there).
    confidence, n_resamples, seed, method
        Of the bootstrap interval (:func:`bootstrap_ci`); ``n_resamples`` and ``seed`` also drive the
        sign-flip test (:func:`sign_flip_pvalue`).
    alpha : float in (0, 1)
        False discovery rate: ``significant = p_adj < alpha``.
    alternative : {"two-sided", "greater", "less"}
        Of the sign-flip test.
    layers, heads : sequences of length L and H, optional
        Labels of the layers and heads (default ``0 … L−1`` and ``0 … H−1``).

    Returns
    -------
    pandas.DataFrame
        L·H rows in layer-major order (layer, then head), columns :data:`COLUMNS`:

        * ``layer``, ``head``: labels;
        * ``n_pairs``: complete pairs n of the cell;
        * ``mean_a``, ``mean_b``: means of A and B over those pairs; ``diff = mean(d)`` (= mean_a −
          mean_b up to rounding); NaN when n = 0;
        * ``ci_low``, ``ci_high``: :func:`bootstrap_ci` of diff at ``confidence`` (marginal, not adjusted
          for the L·H cells);
        * ``p``: :func:`sign_flip_pvalue`; ``p_exact``: whether p enumerates every sign vector
          (:func:`sign_flip_exact`; otherwise Monte Carlo); ``p_adj``: :func:`bh_adjust` over the L·H
          cells (the table's one family);
        * ``effect_size``: :func:`effect_size` (Cohen's d_z);
        * ``significant``: ``p_adj < alpha`` (False where p_adj is NaN);
        * ``rank``: 1 for the largest ``diff`` (signed, descending: rank 1 = most attention in A relative
          to B), ties broken by row order; ``<NA>`` where diff is NaN (nullable integer).

        For a fixed seed the table is deterministic (byte-identical ``to_csv`` on rerun).
    """
    d = paired_differences(a, b)
    if d.ndim != 3:
        raise ValueError(f"a must have shape [P, L, H], got {np.shape(a)}")
    alpha = _check_fraction(alpha, "alpha")
    _, L, H = d.shape
    layers = np.arange(L) if layers is None else np.asarray(layers)
    heads = np.arange(H) if heads is None else np.asarray(heads)
    if layers.shape != (L,):
        raise ValueError(f"layers must have L = {L} labels, got shape {layers.shape}")
    if heads.shape != (H,):
        raise ValueError(f"heads must have H = {H} labels, got shape {heads.shape}")

    incomplete = np.isnan(d)
    a2, _ = _flat(np.where(incomplete, np.nan, np.asarray(a, dtype=np.float64)))
    b2, _ = _flat(np.where(incomplete, np.nan, np.asarray(b, dtype=np.float64)))
    d2, _ = _flat(d)
    n, mean_d = _count_mean(d2)
    low, high = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed, method=method)
    p = sign_flip_pvalue(d, n_resamples=n_resamples, seed=seed, alternative=alternative).reshape(-1)
    p_adj = bh_adjust(p)
    df = pd.DataFrame({
        "layer": np.repeat(layers, H),
        "head": np.tile(heads, L),
        "n_pairs": n,
        "mean_a": _count_mean(a2)[1],
        "mean_b": _count_mean(b2)[1],
        "diff": mean_d,
        "ci_low": low.reshape(-1),
        "ci_high": high.reshape(-1),
        "p": p,
        "p_exact": sign_flip_exact(n, n_resamples),
        "p_adj": p_adj,
        "effect_size": effect_size(d).reshape(-1),
        "significant": np.nan_to_num(p_adj, nan=1.0) < alpha,
    })
    df["rank"] = df["diff"].rank(method="first", ascending=False).astype("Int64")
    return df[COLUMNS]
