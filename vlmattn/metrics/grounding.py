"""Grounding: how well the attention map lands on each ground-truth box.

For a map ``p [V]`` and a box B (token mask M_B: tokens whose centre lies inside, see
:func:`vlmattn.maps.box_mask`):

* ``iou``       |A_q ∩ M_B| / |A_q ∪ M_B| (token counts), A_q = fewest tokens holding ``top_mass``
  (q) of Σp, largest weights first
* ``pointing``  1 if argmax_v pᵥ ∈ M_B else 0 (first maximum on ties)
* ``energy``    Σ_{v∈M_B} pᵥ / Σ_v pᵥ (energy-based pointing game)
* ``box_token_share``  token-area share of M_B — the energy of uniform attention (baseline)
* ``box_area``  box area / image area; ``size_class`` small (< ``small_area``), large
  (≥ ``large_area``), else medium

Closed forms: p one-hot inside B → pointing 1, energy 1, IoU 1/|M_B|; p uniform on exactly M_B and
q = 1 → IoU 1, energy 1. Images without boxes give no rows. An undefined (NaN) map gives NaN IoU,
pointing and energy (see :mod:`.common`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import (
    box_mask,
    defined,
    energy,
    object_boxes,
    object_names,
    pointing,
    token_areas,
    top_mass_mask,
    views,
)

COLUMNS = ["object", "label", "box_area", "size_class", "n_box_tokens", "box_token_share", "iou", "pointing", "energy"]
INDEX = ["step_pool", "step", "sinks", "layer", "head"]
SIZE_CLASSES = ("small", "medium", "large")
PLOTS = ["grounding_by_size", "grounding_layer_head"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head", "size_class"]


def size_class(area: float, small: float, large: float) -> str:
    return "small" if area < small else ("large" if area >= large else "medium")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boolean token masks over the last axis (0 when both are empty)."""
    union = (a | b).sum(-1)
    return np.where(union > 0, (a & b).sum(-1) / np.where(union > 0, union, 1), 0.0)


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool, step, sinks, layer, head`` × ground-truth box, with :data:`COLUMNS`."""
    boxes = object_boxes(sample)
    if len(boxes) == 0:
        return pd.DataFrame(columns=INDEX + COLUMNS)
    names = object_names(sample.labels, sample.colours)
    area = token_areas(sample)
    small, large = cfg["small_area"], cfg["large_area"]
    masks = [box_mask(sample, b) for b in boxes]
    frames = []
    for v in views(sample, cfg):
        idx = v.index()
        top = top_mass_mask(v.p, cfg["top_mass"])
        ok = defined(v.p).ravel()
        for name, label, box, m in zip(names, sample.labels, boxes, masks, strict=True):
            box_area = float((box[2] - box[0]) * (box[3] - box[1]))
            frames.append(
                pd.DataFrame(
                    {
                        **idx,
                        "object": name,
                        "label": label,
                        "box_area": box_area,
                        "size_class": size_class(box_area, small, large),
                        "n_box_tokens": int(m.sum()),
                        "box_token_share": float(area[m].sum()),
                        "iou": np.where(ok, iou(top, m).ravel(), np.nan),
                        "pointing": pointing(v.p, m),
                        "energy": energy(v.p, m).ravel(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``grounding_by_size.png``: IoU, pointing accuracy and energy of the pooled maps per layer and
    box-size class (mean over boxes and samples; dotted: uniform-attention energy);
    ``grounding_layer_head.png``: energy per layer × head (``table``: the summary's means,
    :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    panels = plotting.facets(table[table["head"].isin(["mean", "max"])])
    path = out_dir / "grounding_by_size.png"
    if not panels:
        plotting.empty_figure(path, "no ground-truth boxes in any sample")
    else:
        cols = ["iou", "pointing", "energy"]
        plt = plotting.pyplot()
        fig, axes = plt.subplots(len(panels), 3, figsize=(12, 3 * len(panels)), constrained_layout=True,
                                 squeeze=False)
        for row, (name, g) in zip(axes, panels, strict=True):
            for (sc, hp), gs in g.groupby(["size_class", "head"], sort=True):
                m = pooled(gs, ["layer"], cols + ["box_token_share"])
                style = "-" if hp == "mean" else "--"
                colour = f"C{SIZE_CLASSES.index(sc)}" if sc in SIZE_CLASSES else "k"
                for ax, col in zip(row, cols, strict=True):
                    ax.plot(m.index, m[col], style, marker="o", color=colour, label=f"{sc} · heads {hp}")
                row[2].plot(m.index, m["box_token_share"], ":", color=colour)
            for ax, col in zip(row, cols, strict=True):
                ax.set_title(f"{col} · {name}", fontsize=8)
                ax.set_xlabel("LLM layer")
                ax.set_ylim(-0.02, 1.02)
            row[0].legend(fontsize=7)
        plotting.save(fig, path)
    plotting.layer_head_heatmap(table, "energy", out_dir / "grounding_layer_head.png",
                                "Energy inside the ground-truth boxes")
