"""Hotspots: separate peaks of a map on the vision grid.

For a map ``p [V]`` laid on its grid:

1. threshold τ = the ``percentile``-th percentile of p (numpy, linear interpolation);
2. peaks = tokens with pᵥ = max of their ``size × size`` neighbourhood (``scipy.ndimage.maximum_filter``)
   and pᵥ ≥ τ;
3. the tokens with pᵥ ≥ τ are grouped into connected components (``scipy.ndimage.label``,
   ``connectivity`` 4 or 8); a hotspot is a component holding at least one peak.

Per hotspot (``hotspot`` = rank by peak, 0 = strongest): ``x, y`` attention-weighted centroid of its
tokens' centres, ``peak`` max p, ``mass`` Σp, ``area`` token-area share of the image, ``n_tokens``,
``n_peaks``, ``quadrant`` of the centroid; ``n_hotspots`` is repeated on each row of a map. An
undefined (NaN) map (see :mod:`.common`) has one row with every column NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import defined, label_tokens, local_maxima, quadrant_of, token_areas, views

COLUMNS = ["n_hotspots", "hotspot", "x", "y", "peak", "mass", "area", "n_tokens", "n_peaks", "quadrant"]
INT_COLUMNS = ["n_hotspots", "hotspot", "n_tokens", "n_peaks"]
PLOTS = ["hotspots_layer_head", "hotspots_positions"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head", "hotspot"]


def find_hotspots(p: np.ndarray, sample, size: int, percentile: float, connectivity: int) -> list[dict]:
    """Hotspots of one map ``p [V]``, strongest first (dicts with the keys of :data:`COLUMNS` but ``n_hotspots``)."""
    thr = np.percentile(p, percentile)
    above = p >= thr
    peaks = local_maxima(p, sample, size) & above
    labels, n = label_tokens(above, sample, connectivity)
    centres = sample.token_centres.astype(np.float64)
    area = token_areas(sample)
    out = []
    for k in range(1, n + 1):
        member = labels == k
        if not (peaks & member).any():
            continue
        w = p[member]
        wc = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
        x, y = wc @ centres[member]
        out.append({"x": x, "y": y, "peak": w.max(), "mass": w.sum(), "area": area[member].sum(),
                    "n_tokens": int(member.sum()), "n_peaks": int((peaks & member).sum()),
                    "quadrant": quadrant_of(x, y)})
    out.sort(key=lambda r: -r["peak"])
    for i, r in enumerate(out):
        r["hotspot"] = i
    return out


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool, step, sinks, layer, head`` × hotspot, with :data:`COLUMNS`."""
    size, pct, conn = cfg["size"], cfg["percentile"], cfg["connectivity"]
    rows = []
    for v in views(sample, cfg):
        idx = pd.DataFrame(v.index())
        flat = v.p.reshape(-1, v.p.shape[-1])
        for i, p in enumerate(flat):
            base = idx.iloc[i].to_dict()
            if not defined(p):
                rows.append({**base, **dict.fromkeys(COLUMNS, np.nan)})
                continue
            hs = find_hotspots(p, sample, size, pct, conn)
            rows += [{**base, "n_hotspots": len(hs), **h} for h in hs]
    df = pd.DataFrame(rows)
    for col in ["step"] + INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    return df[["step_pool", "step", "sinks", "layer", "head"] + COLUMNS]


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``hotspots_layer_head.png``: number of hotspots per layer × head (mean over samples);
    ``hotspots_positions.png``: mean centroid of the pooled maps' strongest hotspots per layer and rank
    (size ∝ mean peak; ``table``: the summary's means, :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    per_map = table[table["hotspot"] == 0]  # n_hotspots repeats on every hotspot of a map
    plotting.layer_head_heatmap(per_map, "n_hotspots", out_dir / "hotspots_layer_head.png", "Number of hotspots")
    rows = table[table["head"].isin(["mean", "max"]) & table["hotspot"].notna()]
    grid = plotting.facet_grid(rows, out_dir / "hotspots_positions.png", "no pooled-head rows", size=(3.8, 3.8))
    if grid is None:
        return
    fig, cells = grid
    top = max(float(rows["peak"].max()), 1e-12)
    for ax, name, g in cells:
        m = pooled(g, ["layer", "hotspot"], ["x", "y", "peak"]).reset_index()
        sc = ax.scatter(m["x"], m["y"], s=8 + 400 * m["peak"] / top, c=m["layer"], cmap="viridis", alpha=0.6)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.axvline(0.5, color="grey", lw=0.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
        fig.colorbar(sc, ax=ax, shrink=0.7, label="layer")
    fig.suptitle("Mean hotspot centroids per layer and rank (pooled heads; size ∝ peak)")
    plotting.save(fig, out_dir / "hotspots_positions.png")
