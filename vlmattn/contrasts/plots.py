"""Figures of a contrast (matplotlib, Agg backend): one function per figure, tables in, PNG out.

* :func:`top_heads` — the k heads with the largest A − B difference of ROI mass, with their bootstrap
  intervals; heads significant after Benjamini–Hochberg are filled, the others hollow;
* :func:`head_heatmap` — LLM layer × head heatmap of the difference (diverging colours centred at 0,
  significant cells marked);
* :func:`encoder_divergence` — Jensen–Shannon divergence of A's and B's patch maps per encoder layer,
  with its interval and the within-condition baseline;
* :func:`overlays` — A and B side by side: each image with its layer- and head-mean map and the ROI;
* :func:`causal` — Δ log-prob of the answer with the top-k heads knocked out against the random draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import pool_heads, pool_maps
from .pairs import pair_roi, pooled_maps


def _head_label(layer, head) -> str:
    return f"L{int(layer)}.H{int(head)}"


def top_heads(heads: pd.DataFrame, path: Path, *, title: str, k: int) -> None:
    """Bar chart of ``diff`` (mean A − B ROI mass) with its interval ``[ci_low, ci_high]`` for the ``k``
    best-ranked heads of a :func:`vlmattn.contrasts.heads.head_contrast` table."""
    plt = plotting.pyplot()
    top = heads.dropna(subset=["rank"]).sort_values("rank", kind="stable").head(k)
    if top.empty:
        plotting.empty_figure(path, f"{title}: no head has a defined difference")
        return
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(top) + 1.5), 3.4))
    x = np.arange(len(top))
    sig = top["significant"].astype(bool).to_numpy()
    err = np.vstack([top["diff"] - top["ci_low"], top["ci_high"] - top["diff"]]).clip(min=0)
    ax.bar(x[sig], top["diff"].to_numpy()[sig], color="tab:red", label="significant (BH)")
    ax.bar(x[~sig], top["diff"].to_numpy()[~sig], facecolor="none", edgecolor="tab:red", label="not significant")
    ax.errorbar(x, top["diff"], yerr=err, fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(x, [_head_label(r.layer, r.head) for r in top.itertuples()], rotation=45, ha="right")
    ax.set_ylabel("ROI mass, A − B")
    ax.set_xlabel("LLM layer.head (rank order)")
    ax.legend(fontsize=7, loc="upper right")
    n = int(top["n_pairs"].max())
    ax.set_title(f"{title}\ntop {len(top)} heads, {n} pairs, bootstrap intervals", fontsize=9)
    fig.tight_layout()
    plotting.save(fig, path)


def head_heatmap(heads: pd.DataFrame, path: Path, *, title: str) -> None:
    """LLM layer × head heatmap of ``diff``; cells with ``significant`` true carry a dot."""
    plt = plotting.pyplot()
    m = heads.pivot_table(index="layer", columns="head", values="diff", aggfunc="mean")
    if m.empty:
        plotting.empty_figure(path, f"{title}: no head has a defined difference")
        return
    v = m.to_numpy(dtype=float, na_value=np.nan)
    lim = float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0
    fig, ax = plt.subplots(figsize=(max(3.6, 0.35 * m.shape[1] + 2), max(3.0, 0.3 * m.shape[0] + 1.5)))
    im = ax.imshow(v, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim or -1, vmax=lim or 1,
                   interpolation="nearest")
    sig = heads[heads["significant"].astype(bool)]
    rows, cols = {k: i for i, k in enumerate(m.index)}, {k: i for i, k in enumerate(m.columns)}
    ax.scatter([cols[h] for h in sig["head"]], [rows[la] for la in sig["layer"]], s=12, color="black",
               label="significant (BH)")
    ax.set_xticks(range(m.shape[1]), m.columns)
    ax.set_yticks(range(m.shape[0]), m.index)
    ax.set_xlabel("head")
    ax.set_ylabel("LLM layer")
    if len(sig):
        ax.legend(fontsize=7, loc="upper right")
    fig.colorbar(im, ax=ax, shrink=0.8, label="ROI mass, A − B")
    ax.set_title(f"{title}\nROI mass difference per head", fontsize=9)
    fig.tight_layout()
    plotting.save(fig, path)


def encoder_divergence(summary: pd.DataFrame, path: Path, *, title: str) -> None:
    """Jensen–Shannon divergence between A's and B's patch maps per encoder layer (mean over pairs with
    its interval), per source, and the within-condition baseline where the summary has it."""
    plt = plotting.pyplot()
    rows = summary[summary["layer"].astype(str) != "all"]
    if rows.empty:
        plotting.empty_figure(path, f"{title}: no vision-encoder attention in the cache")
        return
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for source, g in rows.groupby("source", sort=True):
        x = g["layer"].astype(int).to_numpy()
        line, = ax.plot(x, g["js"], marker="o", label=f"{source}: A vs B")
        ax.fill_between(x, g["js_ci_low"], g["js_ci_high"], color=line.get_color(), alpha=0.2)
        if "js_null" in g:
            ax.plot(x, g["js_null"], linestyle="--", color=line.get_color(), label=f"{source}: B vs another B")
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("Jensen–Shannon divergence (nats)")
    ax.legend(fontsize=7)
    ax.set_title(f"{title}\npatch maps of A and B per encoder layer", fontsize=9)
    plotting.integer_ticks(fig)
    fig.tight_layout()
    plotting.save(fig, path)


def _mean_map(sample) -> np.ndarray:
    """``[V]``: the answer step's map, heads and layers mean-pooled (nan-aware, renormalised)."""
    p = pooled_maps(sample, step_pooling="first", renormalize=True, min_vision_share=0.0)
    return pool_maps(pool_heads(p, "mean", True), "mean", 0, True)


def overlays(samples_a: list, samples_b: list, path: Path, *, roi, labels: tuple[str, str], title: str) -> None:
    """Pairs side by side (rows: pairs; columns: A, B): each image with the answer step's attention map
    (heads and layers averaged) and the region of interest drawn in white."""
    from matplotlib.patches import Rectangle

    plt = plotting.pyplot()
    n = len(samples_a)
    fig, axes = plt.subplots(n, 2, figsize=(6.0, 2.9 * n), squeeze=False)
    for i, pair in enumerate(zip(samples_a, samples_b, strict=True)):
        x0, y0, x1, y1 = pair_roi(*pair, roi)
        ims, top = [], 0.0
        for j, (s, label) in enumerate(zip(pair, labels, strict=True)):
            ax = axes[i, j]
            m = _mean_map(s)
            ims.append(plotting.overlay(ax, plotting.read_image(s.attrs.get("image_path")), m, s.token_boxes,
                                        np.zeros((0, 4)), [], tuple(s.image_size)))
            top = max(top, float(np.nanmax(ims[-1].get_array())) if np.isfinite(m).any() else 0.0)
            w, h = (float(v) for v in s.image_size)
            ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, edgecolor="white",
                                   linewidth=1.5, linestyle="--"))
            ax.set_title(f"{label}: {s.attrs.get('image_id', '')} → {s.attrs.get('generated_text', '')!r}", fontsize=8)
        for im in ims:  # one colour scale per pair: A and B compare at a glance
            im.set_clim(0, top or 1)
        fig.colorbar(ims[-1], ax=list(axes[i]), shrink=0.8, label="attention density ÷ uniform")
    fig.suptitle(f"{title}\nanswer step, mean of heads and layers; dashed: region of interest", fontsize=9)
    plotting.save(fig, path)


def causal(summary: pd.DataFrame, draws: pd.DataFrame, path: Path, *, title: str) -> None:
    """Per k: the random draws' Δ log-prob (dots) and the top-k heads' Δ (red bar), with the
    percentile of the top-k Δ among the draws."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(summary) + 2), 3.4))
    rng = np.random.default_rng(0)  # horizontal jitter of the dots only
    for i, r in enumerate(summary.sort_values("k").itertuples()):
        d = draws.loc[draws["k"] == r.k, "delta_logprob"].to_numpy()
        ax.scatter(i + rng.uniform(-0.2, 0.2, len(d)), d, s=6, color="grey", alpha=0.6,
                   label="k random heads" if i == 0 else None)
        ax.hlines(r.delta_logprob, i - 0.3, i + 0.3, color="tab:red", linewidth=2.5,
                  label="top-k ranked heads" if i == 0 else None)
        ax.annotate(f"percentile {r.percentile:.0f}", (i, r.delta_logprob), textcoords="offset points", xytext=(0, -12),
                    ha="center", fontsize=7, color="tab:red")
    ax.axhline(0, color="black", linewidth=0.8)
    ks = sorted(summary["k"])
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel("heads knocked out (k)")
    ax.set_ylabel("Δ log-prob of the answer")
    ax.legend(fontsize=7)
    ax.set_title(f"{title}\ncausal check on the A images ({summary['mode'].iloc[0]} ablation)", fontsize=9)
    fig.tight_layout()
    plotting.save(fig, path)
