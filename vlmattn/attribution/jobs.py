"""The attribution stages of the workflow (rules/attribution.smk), one plain function per job.

* :func:`attribute_shard` — per attributed sample of one (model, shard): every map (:mod:`.sample`, one
  HDF5 file each), the faithfulness curves (:mod:`.faithfulness`) and the shard's separability per layer
  (:mod:`.modality_gap`);
* :func:`attribution_tables` — the tables across shards: samples, map agreement, alignment, modality gap,
  faithfulness curves and ranking;
* :func:`plot_attribution` — one model's figures (:mod:`.plots`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..progress import progress
from ..tables import log, one_line_errors, read_index, write_table

SAMPLE_COLUMNS = ["model", "image", "question", "file", "answer", "target_token", "probability", "ig_value",
                  "ig_baseline_value", "ig_delta", "ig_relative_error", "ig_pixels_baseline_value", "ig_pixels_delta",
                  "ig_pixels_relative_error"]
SEPARABILITY_COLUMNS = ["model", "layer", "accuracy", "accuracy_sd", "n_vision", "n_text", "n_samples"]
MAP_COLUMNS = ["model", "image", "question", "map", "pointing", "energy", "spearman_attention"]
ALIGNMENT_COLUMNS = ["model", "image", "question", "reference", "layer", "spearman_attention", "pointing", "energy"]
GAP_COLUMNS = ["model", "layer", "centroid_distance", "separability", "separability_sd", "n_vision", "n_text",
               "n_samples", "n_shards"]
#: table name -> its columns, in the order of :func:`attribution_tables`' outputs
TABLES = {"attribution_samples": SAMPLE_COLUMNS, "attribution_maps": MAP_COLUMNS, "alignment": ALIGNMENT_COLUMNS,
          "modality_gap": GAP_COLUMNS, "faithfulness_curves": None, "faithfulness": None}


def _relative(delta: float, change: float) -> float:
    """``|delta| / |change|`` (NaN for no change): IG's completeness error relative to f(x) − f(b)."""
    return abs(delta) / abs(change) if change else np.nan


@one_line_errors()
def attribute_shard(model: dict, index: str, questions: list[str] | None, options: dict, out_dir: str,
                    outputs: dict, threads: int = 1) -> None:
    """Attribute the samples of the shard ``index`` whose question is in ``questions`` (all with None) on
    ``model``; one HDF5 file per sample in ``out_dir``, and ``outputs["index"]`` (:data:`SAMPLE_COLUMNS`),
    ``outputs["curves"]`` (the sample columns then :data:`.faithfulness.CURVE_COLUMNS`) and
    ``outputs["separability"]`` (:data:`SEPARABILITY_COLUMNS`)."""
    import torch

    from ..engine.inference import load_model, open_image
    from ..store import read_sample
    from . import faithfulness as faith
    from . import modality_gap as gap
    from . import sample as attr
    from . import store as attribution_store

    torch.set_num_threads(threads)
    idx = read_index(index)
    if questions is not None:
        idx = idx[idx["question"].isin(questions)]
    lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"),
                    model.get("device", "cpu"))
    rows, curves, vision_tokens, text_tokens = [], [], [], []
    for row in progress(idx.itertuples(index=False), total=len(idx), desc="attribution", unit="sample"):
        name = f"{row.image}__{row.question}"
        cached = read_sample(row.file)
        if len(cached.generated_ids) == 0:
            raise InputError(f"attribution, sample {name} of model {row.model}: the model generated no token")
        target = int(cached.generated_ids[0])
        image = open_image(cached.attrs["image_path"])
        question = cached.attrs["question"]
        try:
            sa = attr.attribute(lm, image, question, target, cached, name=name, seed=options["seed"],
                                **options["maps"])
        except ValueError as e:
            raise InputError(f"attribution, sample {name} of model {row.model}: {e}") from e
        file = Path(out_dir) / f"{name}.h5"
        attribution_store.write(file, sa, cached,
                                {"model_id": row.model, "image_id": row.image, "question_id": row.question})
        ks = faith.token_counts(sa.n_vision, options["fractions"])
        c = faith.curves(faith.harness_probability(lm, image, question, target), sa.maps, ks)
        curves.append(c.assign(model=row.model, image=row.image, question=row.question))
        a = sa.attrs
        rows.append((row.model, row.image, row.question, str(file), row.answer, a["target_token"],
                     float(np.exp(a["log_prob"])), a["ig_value"], a["ig_baseline_value"], a["ig_delta"],
                     _relative(a["ig_delta"], a["ig_value"] - a["ig_baseline_value"]),
                     a["ig_pixels_baseline_value"], a["ig_pixels_delta"],
                     _relative(a["ig_pixels_delta"], a["ig_pixels_value"] - a["ig_pixels_baseline_value"])))
        vision_tokens.append(sa.vision_tokens)
        text_tokens.append(sa.text_tokens)
    write_table(pd.DataFrame(rows, columns=SAMPLE_COLUMNS), outputs["index"])
    keys = ["model", "image", "question"]
    cols = [*keys, *faith.CURVE_COLUMNS]
    write_table(pd.concat(curves, ignore_index=True)[cols] if curves else pd.DataFrame(columns=cols),
                outputs["curves"])
    sep = []
    if vision_tokens:
        v, t = np.concatenate(vision_tokens, axis=1), np.concatenate(text_tokens, axis=1)  # [L+1, n, D]
        for layer in range(v.shape[0]):
            try:
                acc, sd = gap.separability(v[layer], t[layer], folds=options["folds"], seed=options["seed"])
            except ValueError as e:
                raise InputError(f"attribution, model {model['id']}, {Path(index).name}: {e} (raise "
                                 "attribution.modality_gap.tokens_per_sample or attribute more samples)") from e
            sep.append((model["id"], layer, acc, sd, v.shape[1], t.shape[1], len(vision_tokens)))
    write_table(pd.DataFrame(sep, columns=SEPARABILITY_COLUMNS), outputs["separability"])
    log.info("model %s: %d samples attributed", model["id"], len(rows))


def _object_mask(s) -> np.ndarray:
    """Tokens ``[V]`` (bool) of any ground-truth box of the stored attribution ``s``."""
    from ..maps import centre_mask

    w, h = (int(x) for x in s.image_size)
    mask = np.zeros(len(s.token_boxes), bool)
    for box in s.boxes:
        mask |= centre_mask(s.token_boxes, (w, h), np.asarray(box, np.float64) / np.array([w, h, w, h]))
    return mask


def _sample_tables(samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The map and alignment tables of every sample, and per model the modality sums over its samples
    (``vision_sum``, ``n_vision``, ``text_sum``, ``n_text``, ``n_samples``)."""
    from . import alignment as align
    from .store import read

    maps, aligned, sums = [], [], {}
    for row in samples.itertuples(index=False):
        s = read(row.file)
        key = (row.model, row.image, row.question)
        mask = _object_mask(s)
        kinds = list(s.maps)
        stack = np.stack([s.maps[k] for k in kinds])
        point, energy = align.box_agreement(stack, mask)
        rho = align.spearman(stack, np.broadcast_to(s.maps["attention"], stack.shape))
        has_boxes = mask.any()
        for k, name in enumerate(kinds):
            maps.append((*key, name, point[k] if has_boxes else pd.NA, energy[k] if has_boxes else np.nan, rho[k]))
        n_layers = len(s.attention_layers)
        for ref, cos in (("answer", s.alignment_answer), ("text", s.alignment_text)):
            att = np.full_like(cos, np.nan)
            att[:n_layers] = s.attention_layers
            rho = align.spearman(cos, att)
            point, energy = align.box_agreement(cos, mask)
            for layer in range(len(cos)):
                aligned.append((*key, ref, layer, rho[layer], point[layer] if has_boxes else pd.NA,
                                energy[layer] if has_boxes else np.nan))
        total = sums.setdefault(row.model, {"vision_sum": 0.0, "n_vision": 0, "text_sum": 0.0, "n_text": 0,
                                            "n_samples": 0})
        for k, v in (("vision_sum", s.vision_sum), ("n_vision", s.n_vision), ("text_sum", s.text_sum),
                     ("n_text", s.n_text), ("n_samples", 1)):
            total[k] = total[k] + v
    map_table = pd.DataFrame(maps, columns=MAP_COLUMNS).astype({"pointing": "Int64"})
    align_table = pd.DataFrame(aligned, columns=ALIGNMENT_COLUMNS).astype({"pointing": "Int64"})
    return map_table, align_table, sums


@one_line_errors()
def attribution_tables(indexes: list[str], curves: list[str], separability: list[str], statistics: dict,
                       seed: int, outputs: list[str]) -> None:
    """The tables of :data:`TABLES` (``outputs`` in that order) from every shard's index, curves and
    separability files."""
    from . import faithfulness as faith
    from . import modality_gap as gap

    samples = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(indexes)],
                        ignore_index=True).sort_values(["model", "image", "question"], kind="stable")
    text = ["model", "image", "question", "file", "answer", "target_token"]
    samples = samples[SAMPLE_COLUMNS].apply(lambda c: c if c.name in text else pd.to_numeric(c.replace("", np.nan)))
    map_table, align_table, sums = _sample_tables(samples)
    sep = pd.concat([pd.read_csv(p) for p in sorted(separability)], ignore_index=True)
    gaps = []
    for model, t in sorted(sums.items()):
        nv, nt, ns = t["n_vision"], t["n_text"], t["n_samples"]
        dist = gap.centroid_distance(t["vision_sum"], nv, t["text_sum"], nt)
        s = sep[sep["model"] == model]
        for layer, d in enumerate(dist):
            g = s[s["layer"] == layer]
            n = g["n_vision"] + g["n_text"]
            acc = float(np.average(g["accuracy"], weights=n)) if len(g) else np.nan
            sd = float(np.average(g["accuracy_sd"], weights=n)) if len(g) else np.nan
            gaps.append((model, layer, float(d), acc, sd, nv, nt, ns, len(g)))
    curve_rows = pd.concat([pd.read_csv(p) for p in sorted(curves)], ignore_index=True)
    curve_rows = curve_rows.sort_values(["model", "image", "question"], kind="stable")
    ranks = []
    for model, g in curve_rows.groupby("model", sort=True):
        areas = faith.areas(g)
        ranks.append(faith.ranking(areas.drop(columns="model"), seed=seed, **statistics).assign(model=model))
    rank_cols = ["model", *faith.RANK_COLUMNS]
    tables = [samples, map_table, align_table, pd.DataFrame(gaps, columns=GAP_COLUMNS),
              curve_rows, pd.concat(ranks, ignore_index=True)[rank_cols] if ranks else pd.DataFrame(columns=rank_cols)]
    for table, out in zip(tables, outputs, strict=True):
        write_table(table, out)


@one_line_errors()
def plot_attribution(model: str, samples: str, curves: str, gaps: str, alignment: str, n_overlays: int,
                     outputs: dict) -> None:
    """``model``'s figures: ``outputs["faithfulness"]`` (curves per map kind), ``outputs["overlays"]``
    (every map of the first ``n_overlays`` samples on their image, attention first) and
    ``outputs["modality_gap"]`` (centroid distance, separability and alignment across layers)."""
    from . import plots
    from .store import read

    pick = pd.read_csv(samples, keep_default_na=False)
    pick = pick[pick["model"] == model].head(n_overlays)
    c = pd.read_csv(curves)
    plots.faithfulness(c[c["model"] == model], Path(outputs["faithfulness"]), title=model)
    stored = [(f"{r.image} · {r.question} → {r.answer}", read(r.file)) for r in pick.itertuples(index=False)]
    plots.overlays(stored, Path(outputs["overlays"]), title=model)
    g, a = pd.read_csv(gaps), pd.read_csv(alignment)
    plots.modality_gap(g[g["model"] == model], a[a["model"] == model], Path(outputs["modality_gap"]), title=model)
