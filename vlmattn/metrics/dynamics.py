"""Dynamics: the attention of each generated token, step by step.

Decode row t is the query that predicts generated token t (``token``). For its map ``p [V]``:

* ``entropy``       H = −Σ pᵥ log pᵥ (nats); ``norm_entropy`` H / log N, N the measured tokens (V, or
  the V − s non-sinks with sinks excluded, as in :mod:`.concentration`; NaN for N = 1)
* ``peak``          max_v pᵥ
* ``vision_share``  raw Σ of the row's attention on the (kept) vision tokens
* ``mass_<region>`` Σ_{v∈R} pᵥ for each quadrant, each ROI of ``regions``, and ``mass_objects`` for
  the union of the ground-truth boxes (NaN without boxes)

Rows: ``step_pool = each``, ``step``, ``sinks``, ``layer``, ``head``; every step is kept, so there is
no step pooling option. An undefined (NaN) map gives NaN in every column but ``token`` and
``vision_share`` (see :mod:`.common`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import box_mask, object_boxes, regions, step_views
from .concentration import entropy, norm_entropy

COLUMNS = ["token", "entropy", "norm_entropy", "peak", "vision_share"]
PLOTS = ["dynamics_tokens"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head"]


def mass_columns(sample, cfg: dict, p: np.ndarray) -> dict[str, np.ndarray]:
    """``mass_<name>`` of ``p [..., V]`` for the quadrants, the ROIs and the union of the objects."""
    names = [f"mass_{r.name}" for r in regions(sample, {**cfg, "objects": False}, image=False)]
    masks = [r.mask for r in regions(sample, {**cfg, "objects": False}, image=False)]
    boxes = object_boxes(sample)
    objects = bool(len(boxes) and cfg["objects"])
    if objects:
        masks.append(np.any([box_mask(sample, b) for b in boxes], axis=0))
    mass = p @ np.array(masks, np.float64).reshape(len(masks), p.shape[-1]).T  # [..., R]: one product
    out = {name: mass[..., i] for i, name in enumerate(names)}
    out["mass_objects"] = mass[..., -1] if objects else np.full(p.shape[:-1], np.nan)
    return out


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool, step, sinks, layer, head`` (every step) with :data:`COLUMNS` + ``mass_*``."""
    frames = []
    for s in step_views(sample, cfg):
        n_steps, n_layers, n_heads, _ = s.p.shape
        h = entropy(s.p)  # the zeroed sinks add entr(0) = 0: the entropy over the measured tokens
        n = s.p.shape[-1] if s.keep is None else int(np.count_nonzero(s.keep))
        masses = mass_columns(sample, cfg, s.p)
        frames.append(
            pd.DataFrame(
                {
                    "step_pool": "each",
                    "step": np.repeat(np.arange(n_steps), n_layers * n_heads),
                    "sinks": s.sinks,
                    "layer": np.tile(np.repeat(np.arange(n_layers), n_heads), n_steps),
                    "head": np.tile(s.heads, n_steps * n_layers),
                    "token": np.repeat(np.asarray(sample.generated_tokens[:n_steps], dtype=object), n_layers * n_heads),
                    "entropy": h.ravel(),
                    "norm_entropy": norm_entropy(h, n).ravel(),
                    "peak": s.p.max(-1).ravel(),
                    "vision_share": s.share.ravel(),
                    **{k: m.ravel() for k, m in masses.items()},
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``dynamics_tokens.png``: per model (row), entropy, peak, vision share and region masses of the
    first pooled head (mean over samples and layers) against the decode step; dashed: sinks excluded
    (``table``: the summary's means, :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    plt = plotting.pyplot()
    pools = [h for h in cfg["head_pooling"] if h in set(table["head"])] or ["0"]
    d = table[table["head"] == pools[0]]
    masses = [c for c in d.columns if c.startswith("mass_") and d[c].notna().any()]
    cols = ["norm_entropy", "peak", "vision_share"] + masses
    models = sorted(d["model"].unique())
    if not models:
        plotting.empty_figure(out_dir / "dynamics_tokens.png", "no rows")
        return
    fig, axes = plt.subplots(len(models), 4, figsize=(18, 2.8 * len(models)), constrained_layout=True,
                             squeeze=False)
    for row, model in zip(axes, models, strict=True):
        g = d[d["model"] == model]
        for sinks, gs in g.groupby("sinks", sort=True):
            m = pooled(gs, ["step"], cols)
            style = "-" if sinks == "included" else "--"
            for ax, col in zip(row[:3], cols[:3], strict=True):
                ax.plot(m.index, m[col], style, marker="o", color="C0", label=f"sinks {sinks}")
            for i, col in enumerate(masses):
                row[3].plot(m.index, m[col], style, marker=".", color=f"C{i}",
                            label=col.removeprefix("mass_") if sinks == "included" else None)
        for ax, title in zip(row, cols[:3] + ["mass per region"], strict=True):
            ax.set_xlabel("decode step (generated token)")
            ax.set_title(f"{title} · {model}", fontsize=8)
        row[0].set_ylabel(f"{model}\nheads {pools[0]}, mean of layers and samples", fontsize=7)
        row[0].legend(fontsize=6)
        row[3].legend(fontsize=6, ncol=2)
    plotting.integer_ticks(fig)
    plotting.save(fig, out_dir / "dynamics_tokens.png")
