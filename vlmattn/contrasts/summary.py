"""Statistics of per-pair divergences: mean per layer with a bootstrap interval, against a
within-condition reference.

Input: a divergence table with one row per pair i and layer l (:func:`divergence.divergence_table` for
the language model, :func:`encoder.encoder_divergence` for the vision encoder; ``layer`` a string,
``all`` for the layer-pooled maps) and the measures :data:`MEASURES`, ``x[i, l]`` for measure x. A pair
counts in a layer when all its measures are defined there (both maps defined); n is their number.

**Mean and interval.** ``x̄[l] = (1/n) Σ_i x[i, l]`` with the bootstrap interval of
:func:`vlmattn.contrasts.stats.bootstrap_ci` (pairs resampled with replacement, ``confidence``,
``method``, ``n_resamples``, ``seed``; the same resamples for every layer and measure with the same
pairs).

**Within-condition reference.** A divergence alone is hard to judge: maps of two different images
already differ. The reference table (:func:`divergence.within_condition`) holds the same measure
between the maps of two different B samples, cyclically,

    x_null[i, l] = x(B_i, B_{(i+1) mod P})[l]        (NaN for P < 3),

so ``x_null`` is the level a change of scene alone produces. The summary reports its mean
``x_null[l] = mean_i x_null[i, l]`` over the pairs where it is defined, and a paired sign-flip test
(:func:`vlmattn.contrasts.stats.sign_flip_pvalue`, ``alternative``) of

    δ[i, l] = x[i, l] − x_null[i, l],        H0: δ[·, l] symmetric about 0,

over the pairs where both are defined, with Benjamini–Hochberg over the rows of the table (every
layer and ``all``; :func:`vlmattn.contrasts.stats.bh_adjust`). ``greater``: A and B of the same scene
lie further apart than two different B scenes; ``less``: closer. The test treats the δ[i] as
independent, while δ[i] and δ[i+1] share the sample B_{i+1}; read p as approximate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import bh_adjust
from .stats import ALTERNATIVES, bootstrap_ci, sign_flip_exact, sign_flip_pvalue

MEASURES = ("kl_ab", "kl_ba", "js", "hausdorff")


def _values(table: pd.DataFrame, name: str) -> tuple[np.ndarray, list, list]:
    """``(x [P, Lr, M], pairs, layers)``: each measure of :data:`MEASURES` per pair and layer (layers in
    order of first appearance), NaN where a pair lacks a row or any measure is undefined."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a DataFrame with columns pair, layer, {', '.join(MEASURES)}")
    missing = [c for c in ("pair", "layer", *MEASURES) if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise ValueError(f"{name} has no rows")
    if table.duplicated(["pair", "layer"]).any():
        raise ValueError(f"{name} has more than one row for some (pair, layer)")
    pairs = sorted(table["pair"].unique())
    layers = list(dict.fromkeys(table["layer"]))
    x = np.stack([table.pivot(index="pair", columns="layer", values=m).reindex(index=pairs, columns=layers)
                  .to_numpy(np.float64) for m in MEASURES], axis=-1)
    if np.isinf(x).any():
        raise ValueError(f"{name} holds infinite divergences")
    x[np.isnan(x).any(-1)] = np.nan
    return x, pairs, layers


def divergence_summary(table: pd.DataFrame, *, null: pd.DataFrame | None, confidence: float, n_resamples: int,
                       seed: int, method: str, alternative: str = "two-sided") -> pd.DataFrame:
    """One row per layer of ``table``: the mean of each measure over the pairs with its bootstrap
    interval and, with ``null``, the within-condition reference and the test against it (module
    docstring).

    Parameters
    ----------
    table : DataFrame
        Columns ``pair``, ``layer`` and :data:`MEASURES` (:func:`divergence.divergence_table` or
        :func:`encoder.encoder_divergence`).
    null : DataFrame or None
        The within-condition reference of the same pairs and layers
        (:func:`divergence.within_condition_table`, :func:`encoder.encoder_within_condition`); None
        leaves its columns out.
    confidence, n_resamples, seed, method
        Of :func:`vlmattn.contrasts.stats.bootstrap_ci`; ``n_resamples`` and ``seed`` also drive the
        sign-flip test.
    alternative : {"two-sided", "greater", "less"}
        Of the sign-flip test of ``x − x_null``.

    Returns
    -------
    pandas.DataFrame
        Rows in the layer order of ``table``; columns ``layer``, ``n_pairs`` (pairs with every measure
        defined), with ``null`` also ``n_null`` (pairs whose reference is defined), then per measure x
        of :data:`MEASURES`: ``x`` (mean), ``x_ci_low``, ``x_ci_high`` and, with ``null``, ``x_null``
        (mean reference), ``x_p`` (sign-flip p of x − x_null, NaN with fewer than 2 usable pairs),
        ``x_p_exact`` (p enumerates every sign vector, :func:`vlmattn.contrasts.stats.sign_flip_exact`)
        and ``x_p_adj`` (BH over the rows of the measure: every layer and ``all``, one family per
        measure).
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}; got {alternative!r}")
    x, pairs, layers = _values(table, "table")
    complete = ~np.isnan(x[..., 0])
    n = complete.sum(0)
    with np.errstate(invalid="ignore"):
        mean = np.where(n[:, None] > 0, np.nansum(x, 0) / n[:, None], np.nan)  # [Lr, M]
    low, high = bootstrap_ci(x, confidence=confidence, n_resamples=n_resamples, seed=seed, method=method)
    out = {"layer": layers, "n_pairs": n}
    if null is not None:
        xn, null_pairs, null_layers = _values(null, "null")
        if null_pairs != pairs or null_layers != layers:
            raise ValueError(f"null must hold the pairs and layers of table: pairs {len(null_pairs)} vs {len(pairs)}, "
                             f"layers {null_layers} vs {layers}")
        n_null = (~np.isnan(xn[..., 0])).sum(0)
        out["n_null"] = n_null
        with np.errstate(invalid="ignore"):
            mean_null = np.where(n_null[:, None] > 0, np.nansum(xn, 0) / n_null[:, None], np.nan)
        delta = x - xn
        p = sign_flip_pvalue(delta, n_resamples=n_resamples, seed=seed, alternative=alternative)  # [Lr, M]
        exact = sign_flip_exact((~np.isnan(delta)).sum(0), n_resamples)  # [Lr, M]
        p_adj = np.stack([bh_adjust(p[:, k]) for k in range(len(MEASURES))], axis=-1)
    for k, m in enumerate(MEASURES):
        out[m], out[f"{m}_ci_low"], out[f"{m}_ci_high"] = mean[:, k], low[:, k], high[:, k]
        if null is not None:
            out[f"{m}_null"], out[f"{m}_p"], out[f"{m}_p_exact"] = mean_null[:, k], p[:, k], exact[:, k]
            out[f"{m}_p_adj"] = p_adj[:, k]
    return pd.DataFrame(out)


def summary_options(statistics: dict) -> dict:
    """:func:`divergence_summary`'s options from a contrast's statistics, one-sided (A vs B above the
    within-condition reference)."""
    return {**{k: statistics[k] for k in ("confidence", "n_resamples", "seed", "method")}, "alternative": "greater"}
