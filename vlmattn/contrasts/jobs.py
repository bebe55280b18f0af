"""The contrast wing's workflow jobs: one analysis of one contrast and model, the merged tables, the
causal check and the figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..tables import log, one_line_errors, write_table, write_tables


def _labelled(df: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """``df`` with the ``labels`` (e.g. contrast, model) as its first columns."""
    return pd.concat([pd.DataFrame({k: [v] * len(df) for k, v in labels.items()}, index=df.index), df], axis=1)


@one_line_errors()
def contrast(analysis: str, files_a: list[str], files_b: list[str], options: dict, labels: dict,
             outputs: list[str]) -> None:
    """Contrast ``analysis`` (:mod:`vlmattn.contrasts.analyses`) of the pairs ``zip(files_a, files_b)``;
    its tables, labelled (``contrast``, ``model`` first), to ``outputs`` in the order of
    ``TABLES[analysis]``. A problem with the pairs' data stops the job with one line naming the
    contrast."""
    from ..errors import InputError
    from .analyses import TABLES, run

    log.info("contrast %s: %s over %d pairs", labels, analysis, len(files_a))
    try:
        tables = run(analysis, files_a, files_b, options)
    except ValueError as e:
        raise InputError(f"contrast {labels.get('contrast')} ({labels.get('model')}), {analysis}: {e}") from e
    for name, out in zip(TABLES[analysis], outputs, strict=True):
        write_table(_labelled(tables[name], labels), out)


def contrast_table(inputs: list[str], out: str) -> None:
    """The per-(contrast, model) tables ``inputs`` concatenated in the given order, cells as written."""
    write_tables([pd.read_csv(p, dtype=str, keep_default_na=False) for p in inputs], out)


@one_line_errors()
def causal(model: dict, items: list[dict], heads_table: str, options: dict, labels: dict, outputs: list[str],
           threads: int = 1) -> None:
    """The causal check of one contrast and model (:func:`vlmattn.contrasts.ablation.causal_table`):
    ``items`` (``image``, ``question``, ``answer``) are the A images; the heads are ranked by the
    ``rank`` column of the contrast's ``heads_table`` (heads with undefined maps have none). Writes the
    summary, the draws and the single-head effects to ``outputs``."""
    import torch

    from ..engine.inference import load_model, open_image
    from .ablation import answer_token_id, causal_table

    torch.set_num_threads(threads)
    heads = pd.read_csv(heads_table).sort_values("rank", kind="stable")
    ranked = [(int(r.layer), int(r.head)) for r in heads.itertuples() if pd.notna(r.rank)]
    lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"),
                    model.get("device", "cpu"))
    work = [(open_image(it["image"]), it["question"], answer_token_id(lm, it["answer"])) for it in items]
    tables = causal_table(lm, work, ranked, ks=options["ks"], n_random=options["n_random"], seed=options["seed"],
                          mode=options["mode"], draw=options["draw"])
    for df, out in zip(tables, outputs, strict=True):
        write_table(_labelled(df, labels), out)


@one_line_errors()
def plot_contrast(heads_table: str, encoder_summary: str, files_a: list[str], files_b: list[str], roi,
                  labels: tuple[str, str], title: str, outputs: list[str]) -> None:
    """The contrast figures (:mod:`vlmattn.contrasts.plots`) of one contrast and model, in the order
    top_heads, head_heatmap, encoder_divergence, overlay."""
    from ..store import read_sample
    from . import plots

    top, heat, enc, overlay = (Path(p) for p in outputs)
    heads = pd.read_csv(heads_table)
    plots.top_heads(heads, top, title=title, k=10)
    plots.head_heatmap(heads, heat, title=title)
    plots.encoder_divergence(pd.read_csv(encoder_summary, dtype={"layer": str}), enc, title=title)
    plots.overlays([read_sample(f) for f in files_a[:3]], [read_sample(f) for f in files_b[:3]], overlay,
                   roi=roi, labels=labels, title=title)


@one_line_errors()
def plot_causal(summary: str, draws: str, title: str, out: str) -> None:
    """The causal check's figure (:func:`vlmattn.contrasts.plots.causal`)."""
    from . import plots

    plots.causal(pd.read_csv(summary), pd.read_csv(draws), Path(out), title=title)
