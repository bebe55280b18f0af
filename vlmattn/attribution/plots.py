"""Figures of the attribution analyses (matplotlib, Agg backend): tables and stored maps in, PNG out.

* :func:`faithfulness` — deletion and insertion curves, the mean over samples per map kind (the random
  map dashed grey: the floor), the answer's probability against the fraction of vision tokens;
* :func:`overlays` — every map of a few samples on their image, one row per sample, attention first;
* :func:`modality_gap` — centroid distance and separability of vision and text hidden states across
  layers, and the alignment maps' Spearman correlation with attention.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting

LABELS = {"attention": "attention", "rollout": "rollout", "attention_gradient": "attention × gradient",
          "attention_gradient_rollout": "attn × grad rollout", "integrated_gradients": "integrated gradients",
          "integrated_gradients_pixels": "IG, pixels",
          "saliency": "saliency", "alignment": "alignment (cos)", "random": "random"}


def faithfulness(curves: pd.DataFrame, path: Path, *, title: str) -> None:
    """Mean deletion and insertion curves per map kind over the samples of ``curves`` (rows
    ``map, curve, fraction, probability`` per sample)."""
    plt = plotting.pyplot()
    if curves.empty:
        plotting.empty_figure(path, f"{title}: no faithfulness curves")
        return
    kinds = list(dict.fromkeys(curves["map"]))
    colours = dict(zip([k for k in kinds if k != "random"], plt.get_cmap("tab10")(np.arange(10)), strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9), sharey=True)
    n = curves[["image", "question"]].drop_duplicates().shape[0]
    for ax, curve in zip(axes, ("deletion", "insertion"), strict=True):
        g = curves[curves["curve"] == curve]
        for kind in kinds:
            mean = g[g["map"] == kind].groupby("fraction")["probability"].mean()
            style = dict(color="grey", linestyle="--") if kind == "random" else dict(color=colours[kind])
            ax.plot(mean.index, mean.to_numpy(), marker="o", markersize=3, label=LABELS.get(kind, kind), **style)
        verb = "removed" if curve == "deletion" else "kept"
        ax.set_xlabel(f"fraction of vision tokens {verb} (top of the map first)")
        ax.set_title(f"{curve} ({'lower' if curve == 'deletion' else 'higher'} is more faithful)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("P(answer token)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title}: faithfulness of each map, mean over {n} samples")
    fig.tight_layout()
    plotting.save(fig, path)


def overlays(stored: list[tuple[str, object]], path: Path, *, title: str) -> None:
    """One row per ``(label, StoredAttribution)``: every map but the random one on the image (each scaled
    to its own range; negative scores clipped), the ground-truth boxes in white."""
    plt = plotting.pyplot()
    if not stored:
        plotting.empty_figure(path, f"{title}: no attributed samples")
        return
    kinds = [k for k in stored[0][1].maps if k != "random"]
    fig, axes = plt.subplots(len(stored), len(kinds), figsize=(1.9 * len(kinds), 2.0 * len(stored) + 0.4),
                             squeeze=False)
    for row, (label, s) in zip(axes, stored, strict=True):
        image = plotting.read_image(s.image_path)
        for ax, kind in zip(row, kinds, strict=True):
            m = np.clip(s.maps[kind], 0, None)
            top = m.max()
            plotting.overlay(ax, image, m / top if top > 0 else m, s.token_boxes, s.boxes, s.labels,
                             tuple(s.image_size))
            if ax is row[0]:
                ax.set_ylabel(label, fontsize=7)
        for ax, kind in zip(axes[0], kinds, strict=True):
            ax.set_title(LABELS.get(kind, kind), fontsize=8)
    fig.suptitle(f"{title}: maps of the answer token (each scaled to its maximum)")
    fig.tight_layout()
    plotting.save(fig, path)


def modality_gap(gaps: pd.DataFrame, alignment: pd.DataFrame, path: Path, *, title: str) -> None:
    """Centroid distance and separability (± its fold sd) against the hidden-state layer, and the mean
    Spearman correlation of the alignment maps (answer and text references) with attention."""
    plt = plotting.pyplot()
    if gaps.empty:
        plotting.empty_figure(path, f"{title}: no modality-gap rows")
        return
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6))
    g = gaps.sort_values("layer")
    axes[0].plot(g["layer"], g["centroid_distance"], marker="o")
    axes[0].set_ylabel("centroid distance (unit vectors)")
    axes[0].set_ylim(0, max(0.1, float(g["centroid_distance"].max()) * 1.15))
    axes[1].errorbar(g["layer"], g["separability"], yerr=g["separability_sd"], marker="o", capsize=3)
    axes[1].axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes[1].set_ylim(0.4, 1.02)
    axes[1].set_ylabel("logistic-regression CV accuracy")
    for ref, a in alignment.groupby("reference", sort=True):
        mean = a.groupby("layer")["spearman_attention"].mean().dropna()
        axes[2].plot(mean.index, mean.to_numpy(), marker="o", label=f"vs the {ref} token{'s' if ref == 'text' else ''}")
    axes[2].axhline(0, color="grey", linewidth=1)
    axes[2].set_ylabel("Spearman ρ, alignment vs attention")
    axes[2].legend(fontsize=7)
    for ax, name in zip(axes, ("modality gap", "linear separability", "alignment and attention"), strict=True):
        ax.set_xlabel("layer (hidden state; 0 = embeddings)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: vision vs text hidden states")
    fig.tight_layout()
    plotting.save(fig, path)
