"""Geometry of the attention's mass-level sets.

For a map ``p [V]`` and a level q in ``levels`` (default 0.5 and 0.9), the level set S_q is the
fewest tokens, largest weights first, whose mass reaches q·Σp (the region enclosed by the q mass
contour). Per level:

* ``n_tokens``   |S_q|
* ``area``       token-area share of S_q (fraction of the image)
* ``hull_area``  area of the convex hull of S_q's token centres in [0, 1]² coordinates
  (``scipy.spatial.ConvexHull``); fewer than 3 points or collinear centres → 0
* ``n_regions``  connected components of S_q on the vision grid (``scipy.ndimage.label``,
  ``connectivity`` 4 or 8)

Closed forms: one-hot p → n_tokens 1, hull 0, one region; uniform p on an n×n grid → area ⌈qV⌉/V and
for q = 1 a hull of side (n − 1)/n. An undefined (NaN) map gives NaN in every column but ``level``
(see :mod:`.common`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import count_components, defined, hull_areas, int_column, token_areas, top_mass_masks, views

COLUMNS = ["level", "n_tokens", "area", "hull_area", "n_regions"]
PLOTS = ["geometry_by_layer", "geometry_layer_head"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head", "level"]


def hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of ``points [n, 2]`` (0 for degenerate sets)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.unique(np.asarray(points, np.float64), axis=0)
    if len(pts) < 3:
        return 0.0
    try:
        return float(ConvexHull(pts).volume)
    except QhullError:
        return 0.0


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool, step, sinks, layer, head`` × level, with :data:`COLUMNS`."""
    levels = cfg["levels"]
    conn = cfg["connectivity"]
    centres = sample.token_centres.astype(np.float64)
    area = token_areas(sample)
    frames = []
    for v in views(sample, cfg):
        idx = v.index()
        flat = v.p.reshape(-1, v.p.shape[-1])
        ok = defined(flat)
        for q, sets in zip(levels, top_mass_masks(flat, levels), strict=True):
            hull = np.full(len(ok), np.nan)
            hull[ok] = hull_areas(sets[ok], centres)
            regions = np.zeros(len(ok), np.int64)
            regions[ok] = count_components(sets[ok], sample, conn)
            frames.append(
                pd.DataFrame(
                    {
                        **idx,
                        "level": q,
                        "n_tokens": int_column(sets.sum(1), ok),
                        "area": np.where(ok, sets @ area, np.nan),
                        "hull_area": hull,
                        "n_regions": int_column(regions, ok),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``geometry_by_layer.png``: area, hull area and region count of each level set per layer for the
    pooled heads (mean over samples); ``geometry_layer_head.png``: area of the lowest level's set per
    layer × head (``table``: the summary's means, :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    plt = plotting.pyplot()
    panels = plotting.facets(table[table["head"].isin(["mean", "max"])])
    cols = ["area", "hull_area", "n_regions"]
    if not panels:
        plotting.empty_figure(out_dir / "geometry_by_layer.png", "no pooled-head rows")
    else:
        fig, axes = plt.subplots(len(panels), 3, figsize=(12, 3 * len(panels)), constrained_layout=True,
                                 squeeze=False)
        for row, (name, g) in zip(axes, panels, strict=True):
            levels = sorted(g["level"].unique())
            for (level, hp), gs in g.groupby(["level", "head"], sort=True):
                m = pooled(gs, ["layer"], cols)
                for ax, col in zip(row, cols, strict=True):
                    ax.plot(m.index, m[col], "-" if hp == "mean" else "--", marker="o", color=f"C{levels.index(level)}",
                            label=f"{level:g} mass · heads {hp}")
            for ax, col in zip(row, cols, strict=True):
                ax.set_title(f"{col} · {name}", fontsize=8)
                ax.set_xlabel("LLM layer")
            row[0].legend(fontsize=7)
        plotting.save(fig, out_dir / "geometry_by_layer.png")
    low = table[table["level"] == table["level"].min()] if len(table) else table
    plotting.layer_head_heatmap(low, "area", out_dir / "geometry_layer_head.png",
                                f"Area of the {low['level'].min() if len(low) else ''} mass set (image fraction)")
