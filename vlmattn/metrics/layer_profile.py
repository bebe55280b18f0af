"""Layer profile: per layer (and step), how focused the heads are on the image and where the whole
attention row goes.

Decode row t ``a [K]`` (``decode_key_len[t]`` valid keys) is split by key position, N = len(input_ids)
(the sums besides the vision tokens' are :func:`vlmattn.store.decode_segment_sums`, read from either
cache layout):

* ``vision_share``       Σ over the vision tokens (the kept ones when sinks are excluded)
* ``cls_share``          Σ over image CLS tokens fed to the LLM (``/vision/cls_positions``; LLaVA with
  ``vision_feature_select_strategy="full"``), 0 for models without one
* ``sink_share``         Σ over the excluded sink tokens (0 when sinks are included)
* ``text_before_share``  Σ over prompt text before the first image token (system prompt)
* ``text_after_share``   Σ over prompt text after it (the question, before generation)
* ``generated_share``    Σ over generated tokens, N ≤ k < decode_key_len[t]
* ``marker_share``       Σ over the other box-less image tokens (``/vision/marker_positions``: LLaVA-NeXT's
  newline tokens, tile and row/col markers, image wrappers): in the tables of a tiled family
  (:func:`vlmattn.maps.tiled`) only

The six shares of a row (seven with ``marker_share``) sum to 1. Entropy is over the vision map p (as in concentration):
``entropy_mean`` / ``entropy_min`` over the H heads (``entropy_min_head`` the argmin) and
``entropy`` of the pooled map. One row per step view × layer × head pooling; shares are pooled over
heads with the same operator (mean or max). Undefined (NaN) head maps (see :mod:`.common`) are left
out of the mean / min over heads and of the pooled map; with none defined the entropy columns are NaN
(the shares are always reported).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import (
    STEP_POOLS,
    Attention,
    int_column,
    pool_heads,
    pool_share,
    sample_answer_step,
    select_steps,
    sink_variants,
    tiled,
)
from ..store import DECODE_SEGMENTS
from .concentration import entropy

SEGMENTS = ["vision", "cls", "sink", "text_before", "text_after", "generated"]
COLUMNS = ["entropy", "entropy_mean", "entropy_min", "entropy_min_head"] + [f"{s}_share" for s in SEGMENTS]
#: the column of layouts with markers (:attr:`vlmattn.store.AttentionSample.marker_positions`)
MARKER_COLUMN = "marker_share"
PLOTS = ["layer_profile", "layer_profile_steps"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "step", "sinks", "layer", "head"]
#: numeric columns that are not quantities to average
SUMMARY_SKIP = ["entropy_min_head"]


def segment_shares(vision: np.ndarray, segments: np.ndarray, keep: np.ndarray | None = None,
                   share: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Raw attention mass ``[T, L, H]`` of each segment in :data:`SEGMENTS`, from a sample's
    ``decode_vision [T, L, H, V]`` and ``decode_segments [T, L, H, S]`` (``keep [V]``: non-sinks;
    ``share``: the vision mass over the kept tokens when the caller has it, :meth:`Attention.shares`)."""
    kept = np.ones(vision.shape[-1], bool) if keep is None else np.asarray(keep, bool)
    others = dict(zip(DECODE_SEGMENTS, np.moveaxis(segments, -1, 0), strict=True))
    sinks = np.flatnonzero(~kept)
    return {
        "vision": vision[..., np.flatnonzero(kept)].astype(np.float64).sum(-1) if share is None else share,
        "cls": others["cls"],
        "sink": vision[..., sinks].astype(np.float64).sum(-1) if len(sinks) else np.zeros(vision.shape[:-1]),
        "text_before": others["text_before"],
        "text_after": others["text_after"],
        "generated": others["generated"],
        "marker": others["markers"],
    }


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool, step, sinks, layer, head`` (head = the pooling) with :data:`COLUMNS`."""
    renorm, min_share = cfg["renormalize"], cfg["min_vision_share"]
    pools = list(cfg["head_pooling"]) or ["mean"]
    att = Attention(sample)  # the vision rows, read once
    variants = sink_variants(sample, cfg, att)
    others = sample.decode_segments  # [T, L, H, S], from either cache layout
    n_steps, n_layers = att.raw.shape[:2]
    cols: dict[str, list] = {k: [] for k in ["step_pool", "step", "sinks", "layer", "head"] + COLUMNS
                             + [MARKER_COLUMN]}
    for label, keep in variants:
        seg_all = segment_shares(att.raw, others, keep, att.shares(keep))
        for sp in cfg["step_pooling"]:
            if sp == "each":
                steps = list(range(n_steps))
            elif sp == "mean":
                steps = [None]
            elif sp in ("first", "last"):
                steps = [sample_answer_step(sample) if sp == "first" else n_steps - 1]
            else:
                raise ValueError(f"unknown step pooling {sp!r} (known: {STEP_POOLS})")
            for t in steps:
                p = att.step_mean(keep, renorm, min_share) if t is None else att.row(keep, renorm, min_share, t)
                h = entropy(p)  # [L, H], NaN for undefined maps
                some = ~np.isnan(h).all(1)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # layers without a defined head → NaN
                    h_mean, h_min = np.nanmean(h, 1), np.nanmin(h, 1)
                h_argmin = np.where(np.isnan(h), np.inf, h).argmin(1)
                seg = {k: select_steps(x, sp, t) for k, x in seg_all.items()}
                for hp in pools:
                    cols["step_pool"].append(np.full(n_layers, sp, object))
                    cols["step"].append(np.full(n_layers, -1 if t is None else t))
                    cols["sinks"].append(np.full(n_layers, label, object))
                    cols["layer"].append(np.arange(n_layers))
                    cols["head"].append(np.full(n_layers, hp, object))
                    cols["entropy"].append(entropy(pool_heads(p, hp, renorm)))
                    cols["entropy_mean"].append(h_mean)
                    cols["entropy_min"].append(h_min)
                    cols["entropy_min_head"].append(np.where(some, h_argmin, -1))
                    for k, x in seg.items():
                        cols[f"{k}_share"].append(pool_share(x, hp))
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["step"] = int_column(out["step"], out["step"] >= 0)
    out["entropy_min_head"] = int_column(out["entropy_min_head"], out["entropy_min_head"] >= 0)
    if not tiled(sample):
        del out[MARKER_COLUMN]
    return pd.DataFrame(out)


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``layer_profile.png``: stacked row shares and entropy (mean / min over heads) per layer, mean over
    samples; ``layer_profile_steps.png``: vision share per layer × decode step (``each`` views);
    ``table``: the summary's means, :func:`vlmattn.summaries.means`."""
    from ..summaries import pooled

    plt = plotting.pyplot()
    d = table[table["head"] == "mean"]
    panels = plotting.facets(d)
    if not panels:
        plotting.empty_figure(out_dir / "layer_profile.png", "no mean-pooled rows")
    else:
        fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.4), constrained_layout=True,
                                 squeeze=False)
        for col, (name, g) in enumerate(panels):
            segments = SEGMENTS + (["marker"] if MARKER_COLUMN in g and g[MARKER_COLUMN].notna().any() else [])
            m = pooled(g, ["layer"], [f"{s}_share" for s in segments] + ["entropy_mean", "entropy_min"])
            ax = axes[0, col]
            ax.stackplot(m.index, *[m[f"{s}_share"].fillna(0) for s in segments], labels=segments, alpha=0.85)
            ax.set_ylim(0, 1)
            ax.set_title(name, fontsize=8)
            ax.set_ylabel("share of the attention row")
            ax = axes[1, col]
            ax.plot(m.index, m["entropy_mean"], "-o", label="mean over heads")
            ax.plot(m.index, m["entropy_min"], "--o", label="min over heads")
            ax.set_xlabel("LLM layer")
            ax.set_ylabel("entropy over vision tokens (nats)")
        axes[0, 0].legend(fontsize=7, loc="lower left")
        axes[1, 0].legend(fontsize=7)
        plotting.save(fig, out_dir / "layer_profile.png")
    each = d[d["step_pool"] == "each"]
    if each.empty:
        plotting.empty_figure(out_dir / "layer_profile_steps.png", "no per-step rows (step_pooling has no 'each')")
        return
    groups = list(each.groupby(["model", "sinks"], sort=True))
    fig, axes = plotting.grid_axes(len(groups))
    for ax, ((model, sinks), g) in zip(axes, groups, strict=False):
        m = pooled(g, ["layer", "step"], ["vision_share"])["vision_share"].unstack("step")
        im = ax.imshow(m.to_numpy(dtype=float, na_value=np.nan), aspect="auto", origin="lower", cmap="viridis",
                       interpolation="nearest")
        ax.set_xticks(range(m.shape[1]), m.columns)
        ax.set_yticks(range(m.shape[0]), m.index)
        ax.set_xlabel("decode step")
        ax.set_ylabel("LLM layer")
        ax.set_title(f"vision share · {model} · sinks {sinks}", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    plotting.save(fig, out_dir / "layer_profile_steps.png")
