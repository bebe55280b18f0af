"""The pruning stages of the workflow (rules/pruning.smk), one plain function per job: paths and the
job's options (:mod:`vlmattn.pruning.options`) in, tables and figures out (written atomically).

* :func:`offline_shard` — per cached sample of one (model, shard), every scorer and budget:
  object-token recall and retained attention mass (:mod:`.offline`);
* :func:`offline_tables` — the shards of every model merged and summarised per scorer and budget;
* :func:`online_chunk` — one chunk of the held-out evaluation set run online on one model (:mod:`.evaluate`);
* :func:`online_tables` — the ablation tables of every online model (:mod:`.stats`) and the ranking table;
* :func:`plot_offline`, :func:`plot_ablation` — the figures (:mod:`.plots`);
* :func:`train_pruner`, :func:`learned_chunk`, :func:`learned_tables`, :func:`plot_learned` — the learned
  pruners (:mod:`.learned`): training per variant, online runs per chunk, the comparison and its figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..progress import progress
from ..tables import one_line_errors, read_index, write_table, write_tables
from .options import check_prune_layer

#: the tables of :func:`online_tables`, in output order
ONLINE_TABLES = ("study_a", "study_b", "published", "ranks", "speed")


def model_budgets(n_vision: int, options: dict, n_layers: int, model: str) -> np.ndarray:
    """The kept counts of :func:`.offline.model_budgets` for a model with ``n_vision`` vision tokens and
    ``n_layers`` decoder layers (``options``: a job's, with ``budgets`` and ``prune_layer``); InputError
    naming ``pruning.budget_convention`` when a budget keeps nothing."""
    from . import offline

    try:
        return offline.model_budgets(n_vision, **options["budgets"], n_layers=n_layers,
                                     prune_layer=options["prune_layer"])
    except ValueError as e:
        raise InputError(f"config pruning.budget_convention: {options['budgets']['convention']} on model "
                         f"{model!r}: {e}") from e


@one_line_errors()
def offline_shard(index: str, options: dict, out: str) -> None:
    """Per sample of the shard ``index`` (rows in index order), the offline table of every scorer
    (:func:`.offline.sample_scores`) and budget (:func:`.offline.model_budgets` of the sample's V):
    ``model, image, question`` then :data:`.offline.COLUMNS`."""
    from ..store import read_sample
    from . import offline

    idx = read_index(index)
    frames = []
    for row in progress(idx.itertuples(index=False), total=len(idx), desc="pruning offline", unit="sample"):
        sample = read_sample(row.file)
        check_prune_layer(options["prune_layer"], sample.n_layers, row.model)
        try:
            scores = offline.sample_scores(sample, prune_layer=options["prune_layer"], **options["scores"])
        except ValueError as e:
            raise InputError(f"pruning offline, sample {row.image}__{row.question} of model {row.model}: {e}") from e
        budgets = model_budgets(len(sample.vision_index), options, sample.n_layers, row.model)
        table = offline.offline_table(sample, scores, budgets, prune_layer=options["prune_layer"],
                                      step=options["step"], pooling=True)
        frames.append(table.assign(model=row.model, image=row.image, question=row.question)
                      [["model", "image", "question", *offline.COLUMNS]])
    write_tables(frames, out)


@one_line_errors()
def offline_tables(inputs: list[str], confidence: float, out: str) -> None:
    """:func:`.offline.offline_summary` per model of the shard tables ``inputs``, ``model`` first."""
    from . import offline

    rows = pd.concat([pd.read_csv(p) for p in sorted(inputs)], ignore_index=True)
    frames = [offline.offline_summary(g, confidence=confidence).assign(model=m)
              for m, g in rows.groupby("model", sort=True)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=offline.SUMMARY_COLUMNS)
    write_table(table[["model", *offline.SUMMARY_COLUMNS]], out)


def chunk_items(eval_set: dict, n_items: int, seed: int, chunks: int, chunk: int) -> list:
    """Chunk ``chunk`` (0-based) of ``chunks`` contiguous, near-equal slices of the first ``n_items`` of
    the evaluation set ``eval_set`` (:func:`.evalset.evaluation_items`, ``seed``); items keep their indexes."""
    from .evalset import evaluation_items

    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk must lie in 0 … {chunks - 1}, got {chunk}")
    items = evaluation_items(eval_set, n_items=n_items, seed=seed)
    bounds = np.linspace(0, n_items, chunks + 1).round().astype(int)
    return items[bounds[chunk]:bounds[chunk + 1]]


def _model_and_budgets(model: dict, options: dict, items: list):
    """``(lm, budgets)``: the loaded ``model`` (checked against ``prune_layer``) and the kept counts of
    :func:`.offline.model_budgets` for its V, counted in the first item's prompt."""
    from ..engine.inference import load_model, model_inputs

    lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"),
                    model.get("device", "cpu"))
    check_prune_layer(options["prune_layer"], int(lm.model.config.get_text_config().num_hidden_layers), model["id"])
    ids = model_inputs(lm, items[0].image, items[0].question)["input_ids"][0]
    n_vision = int((ids == lm.model.config.image_token_id).sum())
    return lm, model_budgets(n_vision, options, int(lm.model.config.get_text_config().num_hidden_layers),
                             model["id"])


@one_line_errors()
def online_chunk(model: dict, options: dict, chunk: int, out: str, threads: int = 1) -> None:
    """Rows of :func:`.evaluate.evaluate` for chunk ``chunk`` of the evaluation set on ``model`` (the
    budgets of :func:`.offline.model_budgets` of its V), ``model`` first."""
    import torch

    from .evaluate import COLUMNS, evaluate

    torch.set_num_threads(threads)
    on = options["online"]
    items = chunk_items(on["eval_set"], on["n_items"], on["seed"], on["chunks"], chunk)
    lm, budgets = _model_and_budgets(model, options, items)
    rows = evaluate(lm, items, budgets=budgets, max_new_tokens=on["max_new_tokens"], modes=on["modes"],
                    positions=on["positions"], prune_layer=options["prune_layer"],
                    scoring=on["eval_set"]["scoring"], **options["scores"])
    write_table(rows.assign(model=model["id"])[["model", *COLUMNS]], out)


def _rows(paths: list[str]) -> pd.DataFrame:
    """The online rows of the chunk files ``paths`` (answers read as text, an empty answer as "")."""
    rows = pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in sorted(paths)],
                     ignore_index=True)
    rows[["answer", "expected"]] = rows[["answer", "expected"]].fillna("").astype(str)
    return rows


def _tables(rows: pd.DataFrame, confidence: float, alpha: float, fractional: bool) -> dict[str, pd.DataFrame]:
    from . import stats

    out: dict[str, list] = {name: [] for name in ONLINE_TABLES}
    for m, g in rows.groupby("model", sort=True):
        tables = stats.ablation_tables(g, confidence=confidence, alpha=alpha, fractional=fractional)
        for name, t in tables.items():
            out[name].append(t.assign(model=m))
            out["ranks"].append(stats.rank_table(t, study=name).assign(model=m))
        out["speed"].append(stats.speed_table(g).assign(model=m))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in out.items()}


@one_line_errors()
def online_tables(inputs: list[str], statistics: dict, convention: str, outputs: list[str]) -> None:
    """The chunks ``inputs`` of every online model → ``outputs``: the ablation tables of study A, study B
    and the published signals (:func:`.stats.ablation_tables`, baselines in each), their ranking
    (:func:`.stats.rank_table`) and the measured cost (:func:`.stats.speed_table`), ``model`` first;
    every table but the speed table names the ``budget_convention`` its budgets were read under
    (:func:`.offline.kept_count`)."""
    tables = _tables(_rows(inputs), statistics["confidence"], statistics["alpha"], statistics["fractional"])
    for name, out in zip(ONLINE_TABLES, outputs, strict=True):
        t = tables[name] if name == "speed" else tables[name].assign(budget_convention=convention)
        write_table(t[["model", *[c for c in t.columns if c != "model"]]], out)


@one_line_errors()
def plot_offline(summary: str, model: str, out: str) -> None:
    """:func:`.plots.offline` of ``model``'s rows of the offline summary."""
    from . import plots

    t = pd.read_csv(summary)
    plots.offline(t[t["model"] == model], Path(out), title=model)


@one_line_errors()
def plot_ablation(tables: list[str], model: str, modes: list[str], outputs: list[str]) -> None:
    """:func:`.plots.ablation` per study table (``tables``, in :data:`ONLINE_TABLES` order) and mode;
    ``outputs`` in the order study-major, mode-minor."""
    from . import plots

    targets = iter(outputs)
    for name, path in zip(ONLINE_TABLES[:3], tables, strict=True):
        t = pd.read_csv(path)
        for mode in modes:
            plots.ablation(t[t["model"] == model], Path(next(targets)), study=name, mode=mode, title=model)


# --- the learned pruners ----------------------------------------------------------------------------


@one_line_errors()
def train_pruner(model: dict, options: dict, variant: str, out_weights: str, out_report: str, threads: int = 1) -> None:
    """Train the learned pruner ``variant`` (``options``: :func:`.options.train_options`) at layer ``prune_layer``
    of ``model`` (:func:`.train_pruner.train_pruner`); save it (metadata: model, variant, training seconds,
    final residual weight) and its report (``variant``, ``keep_ratio`` then the report's columns)."""
    import time

    import torch

    from ..tables import atomic_target
    from .learned import PrunerSpec
    from .train_pruner import REPORT_COLUMNS, PrunerTraining
    from .train_pruner import train_pruner as fit

    torch.set_num_threads(threads)
    from ..engine.inference import load_model

    lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"),
                    model.get("device", "cpu"))
    k = options["prune_layer"]
    check_prune_layer(k, int(lm.model.config.get_text_config().num_hidden_layers), model["id"])
    spec = PrunerSpec(layers=(k,), hidden_size=int(lm.model.config.get_text_config().hidden_size), **options["spec"])
    training = PrunerTraining.from_dict(options["train"])
    started = time.perf_counter()
    pruner, report = fit(lm.model, lm.processor, spec, training)
    seconds = time.perf_counter() - started
    meta = {"model": model["id"], "variant": variant, "train_seconds": round(seconds, 1),
            "attn_weight": pruner.residual_weights()[k] if spec.use_attn_residual else None}
    tmp = atomic_target(Path(out_weights))
    try:
        pruner.save(tmp, meta)
        tmp.replace(out_weights)
    finally:
        tmp.unlink(missing_ok=True)
    report = report.assign(variant=variant, keep_ratio=training.keep_ratio)
    write_table(report[["variant", "keep_ratio", *REPORT_COLUMNS]], out_report)


@one_line_errors()
def learned_chunk(model: dict, options: dict, chunk: int, pruners: list[str], out: str, threads: int = 1) -> None:
    """Rows of :func:`.evaluate.evaluate_learned` of the saved ``pruners`` (files named ``<variant>.safetensors``)
    on chunk ``chunk`` of the evaluation set, at the budgets of :func:`.offline.model_budgets`; ``model`` first."""
    import torch

    from .evaluate import COLUMNS, evaluate_learned
    from .learned import load_pruner

    torch.set_num_threads(threads)
    on = options["online"]
    items = chunk_items(on["eval_set"], on["n_items"], on["seed"], on["chunks"], chunk)
    lm, budgets = _model_and_budgets(model, options, items)
    loaded = {}
    for path in pruners:
        pruner, meta = load_pruner(path)
        if pruner.layers != (options["prune_layer"],):
            raise InputError(f"pruner {path} prunes at layers {list(pruner.layers)}, not pruning.prune_layer "
                             f"{options['prune_layer']}; retrain it")
        loaded[meta.get("variant", Path(path).stem)] = pruner
    rows = evaluate_learned(lm, loaded, items, budgets=budgets, max_new_tokens=on["max_new_tokens"],
                            positions=on["positions"], scoring=on["eval_set"]["scoring"])
    write_table(rows.assign(model=model["id"])[["model", *COLUMNS]], out)


@one_line_errors()
def learned_tables(online: list[str], learned: list[str], reports: list[str], statistics: dict,
                   out_comparison: str, out_training: str) -> None:
    """The comparison of the learned pruners (:func:`.stats.learned_table` per model of the chunks
    ``learned``, against the ablation chunks ``online``) and their training reports merged, ``model`` first."""
    from . import stats

    rows, mine = _rows(online), _rows(learned)
    frames = [stats.learned_table(rows[rows["model"] == m], g, confidence=statistics["confidence"],
                                  alpha=statistics["alpha"], fractional=statistics["fractional"]).assign(model=m)
              for m, g in mine.groupby("model", sort=True)]
    table = pd.concat(frames, ignore_index=True)
    write_table(table[["model", *stats.TABLE_COLUMNS]], out_comparison)
    training = []
    for path in sorted(reports):
        training.append(pd.read_csv(path).assign(model=Path(path).parent.name))
    t = pd.concat(training, ignore_index=True)
    write_table(t[["model", *[c for c in t.columns if c != "model"]]], out_training)


@one_line_errors()
def plot_learned(comparison: str, training: str, model: str, out_comparison: str, out_training: str) -> None:
    """:func:`.plots.ablation` of ``model``'s learned-pruner comparison (references drawn) and
    :func:`.plots.pruner_training` of its training reports."""
    from . import plots

    t = pd.read_csv(comparison)
    plots.ablation(t[t["model"] == model], Path(out_comparison), study="learned", mode="drop", title=model,
                   references=True)
    r = pd.read_csv(training)
    plots.pruner_training(r[r["model"] == model], Path(out_training), title=model)
