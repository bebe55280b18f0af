"""Concentration of attention over the vision tokens (one row per step pooling × layer × head).

For a map ``p [..., N]`` over the N measured vision tokens (renormalised to Σp = 1 by default):

* ``n_vision``      N: all V vision tokens, or the V − s kept ones with sinks excluded
* ``entropy``       H = −Σ pᵢ log pᵢ (nats, 0·log 0 = 0)
* ``norm_entropy``  H / log N (NaN for N = 1)
* ``gini``          G = Σᵢ (2i − N − 1)·p₍ᵢ₎ / (N Σp), p₍ᵢ₎ sorted ascending, i = 1..N
* ``effective_span`` fewest tokens whose largest weights reach ``span_threshold``·Σp
* ``peak_to_mean``  max p / mean p = N · max p / Σp
* ``vision_share``  raw Σ of the row's attention on the (kept) vision tokens (before renormalisation)

With sinks excluded (``sinks = excluded``) the map is renormalised over the V − s non-sink tokens
(:mod:`.common`), so every figure is that of the distribution actually measured: N = V − s, and
a map uniform over the kept tokens has ``norm_entropy`` 1, Gini 0 and peak / mean 1 (the zeroed
sinks are not counted as tokens without attention). A pooled head's ``vision_share`` is the mean /
max over all H heads, undefined ones included, while its map pools the defined heads only (see
:mod:`.common`).

Closed forms: uniform → H = log N, G = 0, span = ⌈0.9N⌉; one-hot → H = 0, G = (N−1)/N, span = 1.
An undefined map (vision share below ``min_vision_share``, see :mod:`.common`) is all NaN and gives
NaN in every column but ``n_vision`` and ``vision_share`` (the rule of :mod:`.common`); pooled maps
are renormalised, so H is the Shannon entropy of a distribution (``scipy.stats.entropy`` of the same
map).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import defined, int_column, measured, views

COLUMNS = ["entropy", "norm_entropy", "gini", "effective_span", "peak_to_mean", "vision_share"]
PLOTS = ["concentration_by_layer"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head"]


def entropy(p: np.ndarray) -> np.ndarray:
    """−Σ pᵢ log pᵢ (nats) over the last axis (``scipy.special.entr``; 0·log 0 = 0, NaN for a NaN map)."""
    from scipy.special import entr

    return entr(p).sum(-1)


def norm_entropy(h: np.ndarray, n: int) -> np.ndarray:
    """H / log N for entropies ``h [...]`` of maps over ``n`` tokens; NaN for n < 2 (log 1 = 0)."""
    h = np.asarray(h, np.float64)
    return h / np.log(n) if n > 1 else np.full(h.shape, np.nan)


def gini(p: np.ndarray) -> np.ndarray:
    """Gini coefficient over the last axis (0 = equal, (N−1)/N = one-hot)."""
    n = p.shape[-1]
    s = np.sort(p, axis=-1)
    i = np.arange(1, n + 1)
    total = s.sum(-1)
    return ((2 * i - n - 1) * s).sum(-1) / (n * np.where(total > 0, total, 1.0))


def effective_span(p: np.ndarray, threshold: float) -> np.ndarray:
    """Fewest tokens whose largest weights cover ``threshold`` of the total, over the last axis
    (integers; compare :func:`vlmattn.maps.defined` for NaN maps, whose value is meaningless)."""
    c = np.cumsum(-np.sort(-p, axis=-1), axis=-1)
    target = threshold * c[..., -1:]
    # relative slack of a few ulps so that exact ties (e.g. 9 × 0.1 vs 0.9) count as reached
    reached = c >= target * (1 - 1e-12)
    return reached.argmax(-1) + 1


def peak_to_mean(p: np.ndarray) -> np.ndarray:
    """N · max p / Σp over the last axis (N = its length; 1 = uniform, N = one-hot)."""
    total = p.sum(-1)
    return p.max(-1) * p.shape[-1] / np.where(total > 0, total, 1.0)


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Tidy rows ``step_pool, step, sinks, layer, head, n_vision`` + :data:`COLUMNS` for one sample."""
    frames = []
    for v in views(sample, cfg):
        p = measured(v.p, v.keep)  # [L, K, N]: the kept tokens only
        n = p.shape[-1]
        h = entropy(p)
        frames.append(
            pd.DataFrame(
                {
                    **v.index(),
                    "n_vision": n,
                    "entropy": h.ravel(),
                    "norm_entropy": norm_entropy(h, n).ravel(),
                    "gini": gini(p).ravel(),
                    "effective_span": int_column(effective_span(p, cfg["span_threshold"]), defined(p)),
                    "peak_to_mean": peak_to_mean(p).ravel(),
                    "vision_share": v.share.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``concentration_by_layer.png``: each metric vs layer, mean over samples, per pooling (``table``: the
    summary's means, :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    plt = plotting.pyplot()
    rows = table[table["head"].isin(["mean", "max"]) & (table["step_pool"] != "each")]
    metrics = ["norm_entropy", "gini", "effective_span", "peak_to_mean", "vision_share"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4), constrained_layout=True)
    for (model, sp, hp, sinks), g in rows.groupby(["model", "step_pool", "head", "sinks"], sort=True):
        m = pooled(g, ["layer"], metrics)
        style = "-" if sinks == "included" else "--"
        for ax, col in zip(axes, metrics, strict=True):
            ax.plot(m.index, m[col], style, marker="o", label=f"{model} · steps {sp} · heads {hp} · sinks {sinks}")
    for ax, col in zip(axes, metrics, strict=True):
        ax.set_xlabel("LLM layer")
        ax.set_title(col)
    axes[0].legend(fontsize=7)
    plotting.save(fig, Path(out_dir) / "concentration_by_layer.png")
