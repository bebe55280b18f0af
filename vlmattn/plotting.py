"""Figure helpers the metric modules share (matplotlib, Agg backend)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

FACET_KEYS = ("model", "step_pool", "sinks")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: an axis label that names an index or a count (``LLM layer``, ``head``, ``decode step``, ``grid row``,
#: ``sink tokens``, ``cluster``): its ticks are integers (layer 3, head 5; never 2.5). Labels of
#: quantities (``entropy over vision tokens``, ``m, heads mean``) do not match.
INTEGER_AXIS = re.compile(r"^(?:LLM |encoder |decode |grid |generated |sink )?"
                          r"(?:layer|head|step|row|column|token|cluster)s?\b", re.IGNORECASE)


def is_countable(label: str) -> bool:
    """Whether an axis labelled ``label`` counts or indexes things (:data:`INTEGER_AXIS`)."""
    return INTEGER_AXIS.match(label) is not None


def integer_ticks(fig) -> None:
    """Integer tick locations on every axis of ``fig`` whose label :func:`is_countable` (axes with
    explicitly placed ticks, as heatmaps set them, keep those)."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    for ax in fig.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if is_countable(label) and not isinstance(axis.get_major_locator(), FixedLocator):
                axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def save(fig, path: Path) -> None:
    """Save ``fig`` to ``path`` (PNG, 110 dpi) with :func:`integer_ticks`, and close it."""
    integer_ticks(fig)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def individual_heads(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of single heads (numeric head labels), with an integer ``head_id`` column."""
    d = df[df["head"].astype(str).str.isdigit()].copy()
    d["head_id"] = d["head"].astype(int)
    return d


def facets(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``(title, rows)`` per (model, step pooling, sinks) present; ``each`` step views are left out."""
    if "step_pool" in df:
        df = df[df["step_pool"] != "each"]
    keys = [k for k in FACET_KEYS if k in df]
    if df.empty:
        return []
    out = []
    for key, g in df.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        out.append((" · ".join(f"{k} {v}" for k, v in zip(keys, key, strict=True)), g))
    return out


def grid_axes(n: int, ncols: int = 4, size: tuple[float, float] = (3.6, 3.0)):
    plt = pyplot()
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), constrained_layout=True,
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def facet_grid(df: pd.DataFrame, path: Path, empty: str, size: tuple[float, float] = (3.6, 3.0)):
    """One axis per :func:`facets` panel of ``df``: ``(fig, [(ax, title, rows), ...])``, or ``None``
    after writing :func:`empty_figure` (saying ``empty``) to ``path`` when there is no panel."""
    panels = facets(df)
    if not panels:
        empty_figure(path, empty)
        return None
    fig, axes = grid_axes(len(panels), size=size)
    return fig, [(ax, name, g) for ax, (name, g) in zip(axes, panels, strict=False)]


def empty_figure(path: Path, message: str) -> None:
    """A placeholder figure saying why there is nothing to draw."""
    fig, (ax,) = grid_axes(1)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    save(fig, path)


def layer_head_heatmap(df: pd.DataFrame, value: str, path: Path, title: str, cmap: str = "viridis") -> None:
    """Layer × head heatmap of ``value`` in a :func:`vlmattn.summaries.means` frame (mean over the
    remaining groups' rows, weighted by their counts: samples, regions, …), one panel per (model, step
    pooling, sinks)."""
    from .summaries import pooled

    panels = facets(individual_heads(df.dropna(subset=[value])))
    if not panels:
        empty_figure(path, f"{title}: no rows")
        return
    fig, axes = grid_axes(len(panels))
    for ax, (name, g) in zip(axes, panels, strict=False):
        m = pooled(g, ["layer", "head_id"], [value])[value].unstack("head_id")
        im = ax.imshow(m.to_numpy(dtype=float, na_value=np.nan), aspect="auto", origin="lower", cmap=cmap,
                       interpolation="nearest")
        ax.set_xticks(range(m.shape[1]), m.columns)
        ax.set_yticks(range(m.shape[0]), m.index)
        ax.set_xlabel("head")
        ax.set_ylabel("LLM layer")
        ax.set_title(name, fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    save(fig, path)


#: longest side of the raster an overlay draws a map's pixel density on
OVERLAY_PIXELS = 320


def overlay(ax, image: np.ndarray | None, values: np.ndarray, token_boxes: np.ndarray, boxes: np.ndarray,
            labels: list[str], image_size: tuple[int, int]) -> object:
    """Draw ``image`` with the map ``values [V]`` over it as a pixel density (each token's value spread
    over its pixel box ``token_boxes [V, 4]``, summed over pieces: :func:`vlmattn.maps.pixel_density`),
    in units of a uniform map's density (``D · w · h``: 1 where a map spread evenly over the image
    would be), and the ground-truth ``boxes`` (pixels). Pixels no token sees stay clear."""
    from matplotlib.patches import Rectangle

    from .maps import pixel_density

    w, h = (int(v) for v in image_size)
    if image is not None:
        ax.imshow(image, extent=(0, w, h, 0))
    scale = min(1.0, OVERLAY_PIXELS / max(w, h, 1))
    density = pixel_density(values, token_boxes, (w, h), scale) * (w * h) / scale**2
    seen = pixel_density(np.ones(len(token_boxes)), token_boxes, (w, h), scale) > 0
    im = ax.imshow(np.where(seen, density, np.nan), extent=(0, w, h, 0), cmap="jet",
                   alpha=0.5 if image is not None else 1.0, interpolation="nearest")
    for box, label in zip(boxes, labels, strict=False):
        bx0, by0, bx1, by1 = box
        ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor="white", linewidth=1.5))
        ax.text(bx0, by0, label, color="white", fontsize=6, va="bottom")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def read_image(path: str | Path | None) -> np.ndarray | None:
    """RGB array of the image at ``path`` (None when absent or unreadable), transparent parts on white
    as the model saw them (:func:`vlmattn.images.convert.to_rgb`)."""
    if not path or not Path(path).is_file():
        return None
    from PIL import Image

    from .images.convert import to_rgb

    with Image.open(path) as im:
        return np.asarray(to_rgb(im))
