"""Where the attention lies on the image: centre of mass, spatial variance and mass per region.

For a map ``p [V]`` over vision tokens with centres ``(xᵥ, yᵥ) ∈ [0, 1]²`` and a region R (a token
mask, see :func:`vlmattn.maps.regions`: the whole image, the four quadrants, the ROIs of
``regions`` and the ground-truth boxes):

* ``mass``        m_R = Σ_{v∈R} pᵥ
* ``area_share``  a_R = Σ_{v∈R} areaᵥ / Σ_v areaᵥ (token-area share of the image)
* ``lift``        (m_R / Σ_v pᵥ) / a_R — 1 for attention spread evenly over the tokens
* ``com_x/com_y`` x̄_R = Σ_{v∈R} pᵥ xᵥ / m_R (centre of mass of the attention within R)
* ``var_x/var_y`` σ²_R = Σ_{v∈R} pᵥ (xᵥ − x̄_R)² / m_R

The ``image`` region gives the centre of mass and variance of the whole map. Moments are NaN where
m_R = 0, lift where a_R = 0; every column computed from an undefined (NaN) map is NaN, while
``region``, ``region_kind``, ``n_tokens`` and ``area_share``, which describe the region, stay filled
(see :mod:`.common`). Closed forms: uniform p on an n×n grid → com (½, ½),
σ² = (1 − 1/n²)/12, quadrant mass ¼, lift 1; one-hot p → com = the token's centre, σ² = 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import moments, pool_heads, pool_maps, regions, views

COLUMNS = ["region", "region_kind", "n_tokens", "area_share", "mass", "lift", "com_x", "com_y", "var_x", "var_y"]
PLOTS = ["spatial_centre_of_mass", "spatial_layer_head"]
SAMPLE_PLOTS = ["spatial_overlay"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head", "region", "region_kind"]


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool, step, sinks, layer, head`` × region, with :data:`COLUMNS`."""
    centres = sample.token_centres.astype(np.float64)
    regs = regions(sample, cfg)
    frames = []
    for v in views(sample, cfg):
        idx = v.index()
        total = v.p.sum(-1).ravel()
        for r in regs:
            mo = {k: a.ravel() for k, a in moments(v.p, centres, r.mask).items()}
            share = mo["mass"] / np.where(total > 0, total, np.nan)
            frames.append(
                pd.DataFrame(
                    {
                        **idx,
                        "region": r.name,
                        "region_kind": r.kind,
                        "n_tokens": int(r.mask.sum()),
                        "area_share": r.area,
                        "mass": mo["mass"],
                        "lift": share / r.area if r.area > 0 else np.nan,
                        **{k: mo[k] for k in ("com_x", "com_y", "var_x", "var_y")},
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``spatial_centre_of_mass.png``: centre of mass of the pooled maps per layer (mean over samples);
    ``spatial_layer_head.png``: lift on the ground-truth objects
    per layer × head (``table``: the summary's means, :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    plt = plotting.pyplot()
    whole = table[(table["region"] == "image") & table["head"].isin(["mean", "max"])]
    grid = plotting.facet_grid(whole, out_dir / "spatial_centre_of_mass.png", "no pooled-head rows", size=(3.8, 3.8))
    if grid is not None:
        fig, cells = grid
        for ax, name, g in cells:
            for (hp, colour) in zip(["mean", "max"], ["C0", "C3"], strict=True):
                gh = g[g["head"] == hp]
                if gh.empty:
                    continue
                m = pooled(gh, ["layer"], ["com_x", "com_y"])
                ax.plot(m["com_x"], m["com_y"], "-o", color=colour, label=f"heads {hp}", markersize=4)
                for layer, row in m.iterrows():
                    ax.annotate(str(layer), (row["com_x"], row["com_y"]), fontsize=6)
            ax.axhline(0.5, color="grey", lw=0.5)
            ax.axvline(0.5, color="grey", lw=0.5)
            ax.set_xlim(0, 1)
            ax.set_ylim(1, 0)
            ax.set_aspect("equal")
            ax.set_xlabel("x (image fraction)")
            ax.set_ylabel("y")
            ax.set_title(name, fontsize=8)
            ax.legend(fontsize=7)
        fig.suptitle("Centre of mass of attention by layer (numbers: layer)")
        plotting.save(fig, out_dir / "spatial_centre_of_mass.png")
    plt.close("all")
    objects = table[table["region_kind"] == "object"]
    plotting.layer_head_heatmap(objects, "lift", out_dir / "spatial_layer_head.png",
                                "Lift (mass share / area share) on ground-truth objects", cmap="magma")


def plot_sample(sample, cfg: dict, out_dir: Path, image_path: str | None = None) -> None:
    """``spatial_overlay.png``: the pooled map of each layer (and their mean) over the image, ground-truth
    boxes drawn; first step pooling of the config (``first``, the answer's step, by default), first
    head pooling (else the mean of the heads) and first sink variant. Pooling is nan-aware
    (:func:`vlmattn.maps.pool_maps`); undefined maps are blank."""
    cfg = {**cfg, "step_pooling": list(cfg["step_pooling"])[:1]}
    v = next(views(sample, cfg))
    hp = (list(cfg["head_pooling"]) or [None])[0]
    maps = v.p[:, v.heads.index(hp)] if hp else pool_heads(v.p, "mean", cfg["renormalize"])  # [L, V]
    image = plotting.read_image(image_path or sample.attrs.get("image_path"))
    labels = [f"{c} {lab}".strip() for lab, c in zip(sample.labels, sample.colours or [""] * len(sample.labels),
                                                     strict=True)]
    panels = [(f"layer {layer}", maps[layer]) for layer in range(len(maps))]
    panels.append(("mean of layers", pool_maps(maps, "mean", 0, cfg["renormalize"])))
    fig, axes = plotting.grid_axes(len(panels), ncols=5, size=(2.6, 2.8))
    for ax, (name, m) in zip(axes, panels, strict=False):
        im = plotting.overlay(ax, image, m, sample.token_boxes, sample.boxes, labels, tuple(sample.image_size))
        ax.set_title(name, fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.7, label="density ÷ uniform")
    step = "mean" if v.step is None else f"{v.step_pool} (step {v.step})"
    fig.suptitle(f"{sample.attrs.get('image_id', '')} · {sample.attrs.get('question', '')} → "
                 f"{sample.attrs.get('generated_text', '')!r}\nsteps {step} · heads {hp or 'mean of heads'} · "
                 f"sinks {v.sinks}", fontsize=9)
    plotting.save(fig, Path(out_dir) / "spatial_overlay.png")
