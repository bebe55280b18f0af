"""Hotspots: separate peaks of a map on the vision grid.

For a map ``p [V]`` laid on its grid:

1. threshold τ = the ``percentile``-th percentile of p (numpy, linear interpolation);
2. peaks = tokens with pᵥ = max of their ``size × size`` neighbourhood (``scipy.ndimage.maximum_filter``)
   and pᵥ ≥ τ;
3. the tokens with pᵥ ≥ τ are grouped into connected components (``scipy.ndimage.label``,
   ``connectivity`` 4 or 8); a hotspot is a component holding at least one peak.

Per hotspot (``hotspot`` = rank by peak, 0 = strongest): ``x, y`` attention-weighted centroid of its
tokens' centres, ``peak`` max p, ``mass`` Σp, ``area`` token-area share of its piece (of the image,
for one grid an image), ``n_tokens``, ``n_peaks``, ``quadrant`` of the centroid; ``n_hotspots`` is
repeated on each row of a map. An undefined (NaN) map (see :mod:`.common`) has one row with every
column NaN.

Tiled layouts (several pieces an image: base and high-resolution grids, tiles and a thumbnail…): the
threshold is the percentile over all the map's tokens, peaks and components are found on each piece's
grid on its own (a component never crosses pieces), hotspots are ranked over all pieces, and a
``piece`` column (after ``hotspot``) gives each hotspot's piece, in the tables of every sample of a tiled
family (:func:`vlmattn.maps.tiled`); the one-grid families' tables have no ``piece`` column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import (
    defined,
    int_column,
    label_tokens,
    local_maxima,
    piece_areas,
    piece_grids,
    quadrant_of,
    tiled,
    views,
)

COLUMNS = ["n_hotspots", "hotspot", "x", "y", "peak", "mass", "area", "n_tokens", "n_peaks", "quadrant"]
INT_COLUMNS = ["n_hotspots", "hotspot", "n_tokens", "n_peaks"]
PLOTS = ["hotspots_layer_head", "hotspots_positions"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head", "hotspot"]
SUMMARY_SKIP = ["piece"]


def find_hotspots(p: np.ndarray, sample, size: int, percentile: float, connectivity: int) -> list[dict]:
    """Hotspots of one map ``p [V]``, strongest first (dicts with the keys of :data:`COLUMNS` but ``n_hotspots``)."""
    thr = np.percentile(p, percentile)
    above = p >= thr
    peaks = local_maxima(p, sample, size) & above
    labels, n = label_tokens(above, sample, connectivity)
    centres = sample.token_centres.astype(np.float64)
    area = piece_areas(sample)
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


def stacked_hotspots(flat: np.ndarray, sample, size: int, percentile: float, connectivity: int) -> dict:
    """:func:`find_hotspots` of every map of ``flat [M, V]`` (all defined) at once: the stack's grids are
    filtered (``maximum_filter`` of size 1 across maps) and labelled (``ndimage.label`` with a structure
    that does not connect maps) together, the components reduced with ``np.bincount``. Returns the
    hotspots' columns (``map`` [0, M), ``hotspot``, :data:`COLUMNS` but ``n_hotspots``), strongest first
    within each map as :func:`find_hotspots` orders them, and ``n_hotspots [M]``."""
    from scipy import ndimage

    m_maps = len(flat)
    thr = np.percentile(flat, percentile, axis=-1) if m_maps else np.zeros(0)
    above = flat >= thr[:, None]
    centres = sample.token_centres.astype(np.float64)
    area = piece_areas(sample)
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    parts = []
    for piece, (idx, shape) in enumerate(piece_grids(sample)):
        g = flat[:, idx].reshape(m_maps, *shape)
        peaks = g == ndimage.maximum_filter(g, size=(1, size, size), mode="constant", cval=-np.inf)
        lab, n = ndimage.label(above[:, idx].reshape(m_maps, *shape), structure=plane)
        lab = lab.reshape(m_maps, len(idx))
        sel = np.flatnonzero(lab)  # tokens above the threshold, in (map, token) order
        comp = lab.ravel()[sel]  # 1..n, numbered in (map, token) order: each map's in find_hotspots' order
        tok = sel % lab.shape[1]
        w = g.reshape(-1)[sel]
        ones = np.bincount(comp, minlength=n + 1)[1:]
        mass = np.bincount(comp, w, minlength=n + 1)[1:]
        n_peaks = np.bincount(comp, peaks.reshape(-1)[sel], minlength=n + 1)[1:].astype(np.int64)
        peak = np.full(n + 1, -np.inf)
        np.maximum.at(peak, comp, w)
        owner = np.zeros(n + 1, np.int64)
        owner[comp] = sel // lab.shape[1]
        cx, cy = centres[idx][tok, 0], centres[idx][tok, 1]
        safe = np.where(mass > 0, mass, 1.0)
        x = np.where(mass > 0, np.bincount(comp, w * cx, n + 1)[1:] / safe, np.bincount(comp, cx, n + 1)[1:] / ones)
        y = np.where(mass > 0, np.bincount(comp, w * cy, n + 1)[1:] / safe, np.bincount(comp, cy, n + 1)[1:] / ones)
        keep = n_peaks > 0
        # a centroid on a quadrant line: as find_hotspots computes it, so that the quadrant is its
        for k in np.flatnonzero(keep & ((np.abs(x - 0.5) < 1e-9) | (np.abs(y - 0.5) < 1e-9))):
            member = tok[comp == k + 1]
            wk = g.reshape(m_maps, -1)[owner[k + 1], member]
            wc = wk / wk.sum() if wk.sum() > 0 else np.full(len(wk), 1 / len(wk))
            x[k], y[k] = wc @ centres[idx][member]
        parts.append({"map": owner[1:][keep], "piece": np.full(keep.sum(), piece), "seq": np.flatnonzero(keep),
                      "x": x[keep], "y": y[keep], "peak": peak[1:][keep], "mass": mass[keep],
                      "area": np.bincount(comp, area[idx][tok], n + 1)[1:][keep], "n_tokens": ones[keep],
                      "n_peaks": n_peaks[keep]})
    cols = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    order = np.lexsort((cols["seq"], cols["piece"], -cols["peak"], cols["map"]))  # stable sort by -peak
    cols = {k: v[order] for k, v in cols.items()}
    n_hot = np.bincount(cols["map"], minlength=m_maps)
    starts = np.cumsum(n_hot) - n_hot
    cols["hotspot"] = np.arange(len(order)) - starts[cols["map"]]
    return {**cols, "n_hotspots": n_hot}


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool, step, sinks, layer, head`` × hotspot, with :data:`COLUMNS`; with
    ``max_per_map`` only the strongest hotspots of each map (``n_hotspots`` still counts all)."""
    size, pct, conn, top = cfg["size"], cfg["percentile"], cfg["connectivity"], cfg["max_per_map"]
    frames = []
    for v in views(sample, cfg):
        flat = v.p.reshape(-1, v.p.shape[-1])
        ok = defined(flat)
        maps = np.flatnonzero(ok)
        hs = stacked_hotspots(flat[ok], sample, size, pct, conn)
        rows = np.ones(len(hs["map"]), bool) if top is None else hs["hotspot"] < top
        undefined = np.flatnonzero(~ok)
        at = np.concatenate([maps[hs["map"][rows]], undefined])  # the rows' maps
        order = np.argsort(at, kind="stable")
        at = at[order]
        real = order < rows.sum()  # the hotspot rows (the others: one per undefined map)
        pick = np.flatnonzero(rows)[order[real]]

        def filled(x, fill=np.nan, dtype=np.float64, real=real, pick=pick):
            out = np.full(len(real), fill, dtype=dtype)
            out[real] = x[pick]
            return out

        n_k = len(v.heads)
        x, y = filled(hs["x"]), filled(hs["y"])
        quadrant = np.full(len(real), np.nan, object)
        quadrant[real] = [quadrant_of(a, b) for a, b in zip(x[real], y[real], strict=True)]
        frames.append(pd.DataFrame({
            "step_pool": v.step_pool,
            "step": pd.array([v.step] * len(at), dtype="Int64"),
            "sinks": v.sinks,
            "layer": (at // n_k).astype(np.int64),
            "head": np.asarray(v.heads, object)[at % n_k],
            "n_hotspots": int_column(filled(hs["n_hotspots"][hs["map"]], 0, np.int64), real),
            "hotspot": int_column(filled(hs["hotspot"], 0, np.int64), real),
            "x": x, "y": y, "peak": filled(hs["peak"]), "mass": filled(hs["mass"]), "area": filled(hs["area"]),
            "n_tokens": int_column(filled(hs["n_tokens"], 0, np.int64), real),
            "n_peaks": int_column(filled(hs["n_peaks"], 0, np.int64), real),
            "quadrant": quadrant,
            "piece": int_column(filled(hs["piece"], 0, np.int64), real),
        }))
    columns = COLUMNS[:2] + ["piece"] + COLUMNS[2:] if tiled(sample) else COLUMNS
    df = pd.concat(frames, ignore_index=True)[["step_pool", "step", "sinks", "layer", "head"] + columns]
    if df["quadrant"].isna().all():  # no defined map: a float column of NaN, as rows of NaN build it
        df["quadrant"] = df["quadrant"].astype(np.float64)
    return df


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
