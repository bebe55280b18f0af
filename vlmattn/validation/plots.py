"""The report's overview figure: the models' answers and the validation checks at a glance.

Left, one panel per model: a question × image grid, each cell the model's answer, green where it
equals the expected answer, red where it does not, grey where none is expected. Right (when the run
validates a trained model): one row per check with its expectation, observed value and a pass/fail
colour. Everything is read from ``results/tables/answers.csv`` and ``validation.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import plotting

PASS, FAIL, NONE = "#b7e1b0", "#f2a7a7", "#e6e6e6"
MAX_CELLS = 40  # images (or questions) shown per panel; the rest are summed up in the title


def _truth(v) -> bool | None:
    if v is None or (isinstance(v, float) and pd.isna(v)) or v == "":
        return None
    return str(v).lower() == "true"


def answer_grid(a: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(text, correct)`` question × image frames of one model's answers ``a`` (``correct``: True,
    False or None where no answer is expected; cells of absent samples are empty)."""
    text = a.pivot(index="question", columns="image", values="answer").fillna("")
    ok = a.assign(ok=a["correct"].map(_truth)).pivot(index="question", columns="image", values="ok")
    return text, ok.reindex_like(text)


def draw(answers: pd.DataFrame, validation: pd.DataFrame | None, path: str | Path) -> None:
    """Write the overview figure to ``path`` (see the module docstring)."""
    plt = plotting.pyplot()
    by_model = dict(tuple(answers.groupby("model", sort=True)))
    models = list(by_model)
    n_right = 1 if validation is not None and len(validation) else 0
    widths = [max(4.0, 1.3 * min(by_model[m]["image"].nunique(), MAX_CELLS) + 1) for m in models]
    heights = [0.25 * (by_model[m]["question"].nunique() + 1) + 0.5 for m in models]
    fig_w = max(widths + [6]) + (8 if n_right else 0)
    fig_h = max(sum(heights) + 0.3, 0.25 * (len(validation) + 1) + 0.8 if n_right else 0, 2)
    fig = plt.figure(figsize=(fig_w, fig_h), constrained_layout=True)
    grid = fig.add_gridspec(len(models) or 1, 1 + n_right, width_ratios=[max(widths + [6])] + [8] * n_right,
                            height_ratios=heights or [1])
    for i, model in enumerate(models):
        ax = fig.add_subplot(grid[i, 0])
        text, ok = answer_grid(by_model[model])
        hidden = max(0, text.shape[1] - MAX_CELLS)
        text, ok = text.iloc[:, :MAX_CELLS], ok.iloc[:, :MAX_CELLS]
        colours = [[PASS if v is True else FAIL if v is False else NONE for v in row] for row in ok.to_numpy()]
        table = ax.table(cellText=text.to_numpy(), cellColours=colours, rowLabels=list(text.index),
                         colLabels=list(text.columns), cellLoc="center", bbox=[0.08, 0, 0.92, 0.88])
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        scored = ok.to_numpy().ravel()
        n_ok = sum(v is True for v in scored)
        n_scored = sum(v is not None and not pd.isna(v) for v in scored)
        extra = f", {hidden} more images not shown" if hidden else ""
        ax.set_title(f"{model}: {n_ok} of {n_scored} expected answers right ({len(by_model[model])} "
                     f"samples{extra})", fontsize=9)
        ax.set_axis_off()
    if n_right:
        ax = fig.add_subplot(grid[:, 1])
        v = validation
        cells = [[r.check, r.model, r.question, r.expectation, f"{float(r.observed):.3g}", "pass" if _truth(r.passed)
                  else "FAIL"] for r in v.itertuples()]
        colours = [[PASS if _truth(r.passed) else FAIL] * 6 for r in v.itertuples()]
        h = min(1.0, 0.25 * (len(v) + 1) / (fig_h - 0.5))  # rows of 0.25 in, from the top
        table = ax.table(cellText=cells, cellColours=colours, colLabels=["check", "model", "questions", "expected",
                                                                         "observed", ""], bbox=[0, 1 - h, 1, h])
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        table.auto_set_column_width(range(6))
        n_pass = sum(_truth(p) for p in v["passed"])
        ax.set_title(f"Validation: {n_pass} of {len(v)} checks pass", fontsize=9)
        ax.set_axis_off()
    plotting.save(fig, Path(path))
