"""Figures of the pruning ablations (matplotlib, Agg backend): tables in, PNG out.

* :func:`ablation` — one study of the online evaluation (an :func:`vlmattn.pruning.stats.accuracy_table`):
  accuracy with its Wilson interval and object-token recall against the kept fraction of the vision
  tokens, one line per scorer of the study, the random draws (their mean, the band between the lowest
  and highest draw) and pooling as baselines, the unpruned model's accuracy as a horizontal line;
* :func:`offline` — the offline scores of the cached samples (:func:`vlmattn.pruning.offline.offline_summary`):
  recall and retained attention mass against the kept fraction for the published signals and the
  baselines, the head- and query-selection strategies as thin grey lines, chance recall dashed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting

STUDY_TITLES = {"study_a": "study A: head selection (query last_token)",
                "study_b": "study B: query selection",
                "published": "published signals",
                "learned": "learned pruners (with and without the attention residual)"}
PUBLISHED = ("fastv", "pyramiddrop", "sparsevlm", "fastervlm", "visionzip_dominant")


def _label(scorer: str) -> str:
    return scorer.split(":", 1)[1] if ":" in scorer else scorer


def _percent_axis(ax, kept: np.ndarray) -> None:
    ticks = np.unique(np.round(kept, 4))
    ax.set_xticks(ticks, [f"{100 * k:.0f}%" for k in ticks])
    ax.set_xlim(0, min(1.0, ticks.max() * 1.08 + 0.02))
    ax.set_xlabel("vision tokens kept")


def _band(ax, g: pd.DataFrame, value: str, **style) -> None:
    """Mean over the random draws per budget, the band between the lowest and highest draw."""
    by = g.groupby("kept")[value]
    kept = np.asarray(sorted(by.groups))
    ax.fill_between(kept, by.min().loc[kept], by.max().loc[kept], color="grey", alpha=0.25, linewidth=0)
    ax.plot(kept, by.mean().loc[kept], **style)


def ablation(table: pd.DataFrame, path: Path, *, study: str, mode: str, title: str, references: bool = False) -> None:
    """Accuracy (Wilson interval as error bars) and recall against the kept fraction for ``study``'s
    scorers of ``table`` in ``mode``, beside the baselines; the unpruned accuracy as a black line. With
    ``references``, the table's other non-baseline scorers (e.g. FastV) are drawn too, dash-dotted."""
    plt = plotting.pyplot()
    t = table[table["mode"] == mode]
    own = t[t["study"] == study]
    if own.empty:
        plotting.empty_figure(path, f"{title}: no {mode} rows of {study}")
        return
    scorers = sorted(own["scorer"].unique())
    colours = plt.get_cmap("tab10" if len(scorers) <= 10 else "tab20")(np.arange(len(scorers)))
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
    rnd = t[t["scorer"].str.startswith("random:")]
    pool = t[t["scorer"] == "pooling"].sort_values("kept")
    others = t[(t["study"] != study) & (t["study"] != "baseline")] if references else t.iloc[:0]
    for ax, value in zip(axes, ("accuracy", "recall"), strict=True):
        for k, scorer in enumerate(sorted(others["scorer"].unique())):
            g = others[others["scorer"] == scorer].sort_values("kept")
            ax.plot(g["kept"], g[value], color=("tab:brown", "tab:olive", "tab:cyan")[k % 3], linestyle="-.",
                    linewidth=1.6, marker="^", markersize=3, label=f"{_label(scorer)} ({g['study'].iloc[0]})")
        for colour, scorer in zip(colours, scorers, strict=True):
            g = own[own["scorer"] == scorer].sort_values("kept")
            if value == "accuracy":
                err = np.vstack([g["accuracy"] - g["ci_low"], g["ci_high"] - g["accuracy"]]).clip(min=0)
                ax.errorbar(g["kept"], g["accuracy"], yerr=err, color=colour, marker="o", markersize=3,
                            linewidth=1.2, capsize=2, label=_label(scorer))
            else:
                ax.plot(g["kept"], g[value], color=colour, marker="o", markersize=3, linewidth=1.2,
                        label=_label(scorer))
        if len(rnd):
            _band(ax, rnd, value, color="dimgrey", linestyle="--", linewidth=1.6,
                  label=f"random (mean of {rnd['scorer'].nunique()} draws)")
        if len(pool):
            ax.plot(pool["kept"], pool[value], color="black", linestyle=":", linewidth=1.8, marker="s",
                    markersize=3, label="pooling")
        if value == "accuracy":
            ax.axhline(float(t["unpruned_accuracy"].mean()), color="black", linewidth=1, label="unpruned")
            ax.set_ylabel(f"accuracy ({int(t['n_items'].max())} questions, 95% CI)")
        else:
            ax.set_ylabel("object-token recall")
        low = float(np.nanmin(t["ci_low"])) if value == "accuracy" else 0.0
        ax.set_ylim(max(0.0, np.floor(20 * low) / 20 - 0.02), 1.02)
        _percent_axis(ax, t["kept"].to_numpy())
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # the accuracy panel also has the unpruned line
    axes[1].legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(f"{title}: {STUDY_TITLES.get(study, study)}, tokens {mode}ped", fontsize=10)
    fig.tight_layout()
    plotting.save(fig, path)


def offline(summary: pd.DataFrame, path: Path, *, title: str) -> None:
    """Recall of object tokens and retained attention mass against the kept fraction, from the cached
    samples: published signals and baselines in colour, study A/B strategies thin grey, chance dashed."""
    plt = plotting.pyplot()
    if summary.empty:
        plotting.empty_figure(path, f"{title}: no offline scores")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
    shown = [s for s in PUBLISHED if s in set(summary["scorer"])]
    colours = dict(zip(shown, plt.get_cmap("tab10")(np.arange(len(shown))), strict=True))
    for ax, value, low, high in ((axes[0], "recall", "recall_ci_low", "recall_ci_high"),
                                 (axes[1], "retained_mass", "retained_ci_low", "retained_ci_high")):
        studies = [s for s in summary["scorer"].unique() if s.startswith(("head:", "query:"))]
        for k, scorer in enumerate(sorted(studies)):
            g = summary[summary["scorer"] == scorer].sort_values("kept")
            ax.plot(g["kept"], g[value], color="lightgrey", linewidth=0.8,
                    label="head / query strategies" if k == 0 else None)
        for scorer in shown:
            g = summary[summary["scorer"] == scorer].sort_values("kept")
            ax.plot(g["kept"], g[value], color=colours[scorer], marker="o", markersize=3, linewidth=1.4, label=scorer)
            ax.fill_between(g["kept"], g[low], g[high], color=colours[scorer], alpha=0.12, linewidth=0)
        for scorer, style in (("random", dict(color="dimgrey", linestyle="--")),
                              ("pooling", dict(color="black", linestyle=":"))):
            g = summary[summary["scorer"] == scorer].sort_values("kept")
            if len(g):
                ax.plot(g["kept"], g[value], marker="s", markersize=3, linewidth=1.6, label=scorer, **style)
        if value == "recall":
            g = summary.groupby("kept")["chance"].mean()
            ax.plot(g.index, g.to_numpy(), color="red", linewidth=0.8, linestyle="--", label="chance (k / V)")
            ax.set_ylabel("object-token recall")
        else:
            ax.set_ylabel("answer attention retained (layers ≥ K)")
        ax.set_ylim(-0.02, 1.02)
        _percent_axis(ax, summary["kept"].to_numpy())
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    n = int(summary["n_samples"].max())
    fig.suptitle(f"{title}: offline scores of {n} cached samples (mean, 95% t-interval)", fontsize=10)
    fig.tight_layout()
    plotting.save(fig, path)


def pruner_training(report: pd.DataFrame, path: Path, *, title: str) -> None:
    """The learned pruners' training reports (:mod:`vlmattn.pruning.train_pruner`, column ``variant``):
    task loss, kept share (with the target as a dashed line when given, column ``keep_ratio``) and the
    residual weight w against the step, one line per variant."""
    plt = plotting.pyplot()
    if report.empty:
        plotting.empty_figure(path, f"{title}: no training report")
        return
    variants = sorted(report["variant"].unique())
    colours = plt.get_cmap("tab10")(np.arange(len(variants)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for colour, v in zip(colours, variants, strict=True):
        g = report[report["variant"] == v].sort_values("step")
        for ax, value in zip(axes, ("task_loss", "keep_share", "attn_weight"), strict=True):
            ax.plot(g["step"], g[value], color=colour, linewidth=1.3, label=v)
    if "keep_ratio" in report:
        axes[1].axhline(float(report["keep_ratio"].iloc[0]), color="black", linestyle="--", linewidth=1,
                        label="budget-loss target (soft share)")
    for ax, label in zip(axes, ("task loss (answer CE)", "vision tokens kept (hard mask)", "residual weight w"),
                         strict=True):
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(f"{title}: learned pruner training", fontsize=10)
    fig.tight_layout()
    plotting.save(fig, path)
