"""Attention sinks among the vision tokens.

With ``p̄[l, h, v]`` the renormalised vision attention of layer l, head h averaged over decode steps and
V vision tokens, a token is a sink when it draws more than ``ratio`` times the uniform share in at least
``min_fraction`` of the (layer, head) pairs:

    fraction_v = mean_{l,h} 1[p̄[l, h, v] > ratio / V],   is_sink_v = fraction_v ≥ min_fraction

Steps whose map is undefined (vision share below ``min_vision_share``, see :mod:`.common`) are left
out of p̄, and (layer, head) pairs without a defined step out of the means over (l, h); a token
without any is never a sink (``fraction``, ``mean_ratio``, ``max_ratio`` NaN).

(the rule of :func:`vlmattn.maps.find_sinks`; the other metrics use the same rule, from this block, when
they exclude sinks). One row per vision token: ``token`` (index in [V]), ``position`` (prompt
position), ``image_index``, grid ``row``/``col`` in its piece, centre ``x``/``y``, ``fraction``,
``mean_ratio`` = V · mean_{l,h} p̄ and ``max_ratio`` = V · max_{l,h} p̄ (1 = uniform share),
``is_sink``. The tables of a tiled family (:func:`vlmattn.maps.tiled`) add a ``piece`` column after
``image_index``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import Attention, fraction_above, piece_grids, tiled

COLUMNS = ["token", "position", "image_index", "row", "col", "x", "y", "fraction", "mean_ratio", "max_ratio",
           "is_sink"]
PLOTS = ["sinks_map"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["token", "position", "image_index", "row", "col"]
SUMMARY_SKIP = ["piece"]


def compute(sample, cfg: dict) -> pd.DataFrame:
    """One row per vision token with :data:`COLUMNS`."""
    ratio, min_fraction, min_share = cfg["ratio"], cfg["min_fraction"], cfg["min_vision_share"]
    pm = Attention(sample).step_mean(None, True, min_share)  # [L, H, V]: the renormalised step-mean maps
    n = pm.shape[-1]
    frac = fraction_above(pm, ratio)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no defined (layer, head) → NaN
        mean_ratio, max_ratio = np.nanmean(pm, (0, 1)) * n, np.nanmax(pm, (0, 1)) * n
    image_index = np.zeros(n, np.int64)
    row = np.zeros(n, np.int64)
    col = np.zeros(n, np.int64)
    piece = np.zeros(n, np.int64)
    for i, (idx, (_, cols)) in enumerate(piece_grids(sample)):
        image_index[idx] = sample.piece_image[i]
        piece[idx] = i
        row[idx], col[idx] = np.divmod(np.arange(len(idx)), cols)
    c = sample.token_centres
    df = pd.DataFrame(
        {
            "token": np.arange(n),
            "position": sample.vision_index,
            "image_index": image_index,
            "row": row,
            "col": col,
            "x": c[:, 0],
            "y": c[:, 1],
            "fraction": frac,
            "mean_ratio": mean_ratio,
            "max_ratio": max_ratio,
            "is_sink": frac >= min_fraction,  # NaN compares False
        }
    )
    if tiled(sample):
        df.insert(3, "piece", piece)
    return df


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``sinks_map.png``: per model, on the (first image's) grid: share of samples in which the token is
    a sink, mean sink ``fraction`` and mean ``mean_ratio``; and the mean number of sink tokens per sample
    for each question (Σ over tokens of the share of samples in which it is a sink); ``table``: the
    summary's means, :func:`vlmattn.summaries.means`."""
    from ..summaries import pooled

    plt = plotting.pyplot()
    models = sorted(table["model"].unique())
    if not models:
        plotting.empty_figure(out_dir / "sinks_map.png", "no rows")
        return
    fig, axes = plt.subplots(len(models), 4, figsize=(16, 3.6 * len(models)), constrained_layout=True, squeeze=False)
    for row, model in zip(axes, models, strict=True):
        d = table[(table["model"] == model) & (table["image_index"] == 0)]
        panels = [("is_sink", "share of samples where a sink"),
                  ("fraction", f"fraction of (layer, head) above {cfg['ratio']:g}/V"),
                  ("mean_ratio", "mean attention ÷ uniform share")]
        one_grid = not d.drop_duplicates("token").duplicated(["row", "col"]).any()
        for ax, (col, title) in zip(row[:3], panels, strict=True):
            if one_grid:
                m = pooled(d, ["row", "col"], [col])[col].unstack("col")
                im = ax.imshow(m.to_numpy(dtype=float, na_value=np.nan), cmap="magma", interpolation="nearest")
                ax.set_xlabel("grid column")
                ax.set_ylabel("grid row")
            else:  # several pieces (tiles, base and high-resolution grids): tokens at their centres
                m = pooled(d, ["token"], [col, "x", "y"])
                im = ax.scatter(m["x"], m["y"], c=m[col], s=6, cmap="magma")
                ax.set_xlim(0, 1)
                ax.set_ylim(1, 0)
                ax.set_aspect("equal")
                ax.set_xlabel("token centre x (image width = 1)")
                ax.set_ylabel("token centre y")
            ax.set_title(f"{model}: {title}", fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8)
        per = table[table["model"] == model].groupby("question", sort=True)["is_sink"].sum()
        row[3].barh(np.arange(len(per)), per.to_numpy())
        row[3].set_yticks(np.arange(len(per)), list(per.index), fontsize=6)
        row[3].set_xlabel("sink tokens per sample (mean)")
        row[3].set_title(f"{model}: sinks per sample (ratio {cfg['ratio']:g}, "
                         f"min fraction {cfg['min_fraction']:g})", fontsize=8)
    plotting.save(fig, out_dir / "sinks_map.png")
