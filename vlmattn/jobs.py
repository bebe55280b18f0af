"""What each workflow job does, as plain functions (the scripts in ``workflow_scripts/`` only unpack
``snakemake.*`` and call these). Every output is written atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .progress import progress
from .store import atomic_target

log = logging.getLogger("vlmattn")


def log_to(path: str | os.PathLike) -> None:
    """Send stderr (tracebacks, progress bars) and the ``vlmattn`` logger to the job's log file.
    Hugging Face's own progress bars (weights loading and saving) are switched off there."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(path, "w", buffering=1)  # noqa: SIM115 - lives for the job
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)


@contextlib.contextmanager
def one_line_errors():
    """Bad input stops the job with its one-line message (``vlmattn: ...``) in the log, no traceback;
    the job's outputs are written atomically, so none is left half-written."""
    from .errors import VlmattnError

    try:
        yield
    except VlmattnError as e:
        log.error("%s", e)
        raise SystemExit(f"vlmattn: {e}") from None


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """CSV with a fixed float format (byte-identical on rerun), via a temporary file."""
    write_tables([df], path)


def draw_scene(image_id: str, size: int, png: str, ann: str, shapes: list[dict] | None = None, seed: int = 0) -> None:
    """Draw synthetic image ``image_id`` and its annotation: the given ``shapes`` (``scene_spec``
    dicts), or else the scene's own (:func:`vlmattn.images.synthetic.scene_shapes` with ``seed``)."""
    from .images.synthetic import scene_shapes, shapes_from_spec, write_scene

    Path(png).parent.mkdir(parents=True, exist_ok=True)
    drawn = shapes_from_spec(shapes) if shapes is not None else scene_shapes(image_id, seed)
    log.info("scene %s (%dx%d): %s", image_id, size, size, json.dumps([{"label": s.label, "colour": s.colour,
                                                                        "box": list(s.box)} for s in drawn]))
    write_scene(image_id, drawn, size, Path(png), Path(ann))


def build_model(build: dict, out_dir: str, threads: int = 1, family: str = "llava") -> None:
    """Build a model of ``family`` offline into ``out_dir`` (written to a sibling temp dir, then renamed).

    ``random``: random weights of the given sizes; ``untrained``: the shapes-task recipe's model
    before training (``vlmattn.models.train.TrainSpec`` fields), the baseline of a trained twin.
    """
    import shutil

    import torch

    from .models import replicas, toy

    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if build["kind"] == "untrained" and family == "llava":
            from .models import train

            model, processor = train.build(train.TrainSpec.from_dict(build.get("spec")))
        elif build["kind"] == "random" and family == "llava":
            model, processor = toy.build_toy(toy.ToySpec.from_dict(build.get("spec")))
        elif build["kind"] == "random":
            model, processor = replicas.build_replica(family, replicas.ReplicaSpec.from_dict(build.get("spec")))
        else:
            raise ValueError(f"model build kind {build['kind']!r} is not available for family {family!r}")
        toy.save(model, processor, tmp)
        log.info("built %s %s model with %d parameters", build["kind"], family, sum(p.numel() for p in model.parameters()))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def train_model(spec: dict, out_dir: str, report_csv: str, report_png: str) -> None:
    """Train the shapes-task LLaVA (``vlmattn.models.train``) and write its training report."""
    from .models import train

    report = train.train(train.TrainSpec.from_dict(spec), out_dir, report_csv, report_png)
    final = report[report.step == report.step.max()]
    log.info("held-out accuracy: %s", dict(zip(final.question_type, final.heldout_accuracy, strict=True)))


@one_line_errors()
def validate(answers: str, spatial: str, concentration: str, cfg: dict, out: str) -> None:
    """The validation table (``vlmattn.validation``) from the pipeline's own tables."""
    from .validation import validate as run

    write_table(run(pd.read_csv(answers), read_table(spatial), read_table(concentration), cfg), out)


def overview(answers: str, validation: list[str], out: str) -> None:
    """The report's overview figure (:mod:`vlmattn.overview`) from the answers and, when the run has
    one, the validation table."""
    from .overview import draw

    draw(pd.read_csv(answers, dtype={"answer": str}, keep_default_na=False),
         pd.read_csv(validation[0]) if validation else None, out)


def load_objects(annotation: str | None, objects: list[dict]) -> list[dict]:
    if annotation:
        return json.loads(Path(annotation).read_text())["objects"]
    return objects


def _sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_fingerprint(path: str) -> str:
    """Identity of a checkpoint: for a local directory its ``config.json`` and each weight file's
    name, size and mtime (a rebuilt model gets a new one); otherwise the hub id itself."""
    p = Path(path)
    if not p.is_dir():
        return str(path)
    parts = [(p / "config.json").read_text() if (p / "config.json").exists() else ""]
    for f in sorted(p.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") or f.name.endswith(".index.json"):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts)


def sample_cache_key(model: dict, sample: dict, settings: dict, seed: int) -> str:
    """Hash of everything an extracted sample depends on (model, image bytes, question, objects,
    settings, seed, library version), naming its file in the extraction cache."""
    import hashlib

    from . import __version__
    from .store import settings_json

    image = Path(sample["image"])
    ident = {
        "model": {k: v for k, v in model.items() if k != "id"},
        "checkpoint": checkpoint_fingerprint(model["path"]),
        "image_sha256": _sha256_file(image) if image.is_file() else str(image),
        "annotation_sha256": _sha256_file(sample["annotation"]) if sample.get("annotation") else None,
        "image_id": sample["image_id"],
        "question_id": sample["question_id"],
        "question": sample["question"],
        "objects": sample["objects"],
        "settings": settings,
        "seed": seed,
        "vlmattn": __version__,
    }
    return hashlib.sha256(settings_json(ident).encode()).hexdigest()[:32]


def _place(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes at ``dst`` atomically: a hard link when possible, else a copy."""
    import shutil

    tmp = atomic_target(dst)
    tmp.unlink()
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _run_batch(lm, batch: list[dict], settings: dict, seed: int) -> list:
    """One :class:`~vlmattn.store.AttentionSample` per sample dict of ``batch``, with its ground truth,
    from one batched generation (:func:`vlmattn.inference.capture_batch`)."""
    import numpy as np

    from .inference import capture_batch, open_image

    venc = settings["vision_encoder"]
    layers = settings["prefill_layers"]
    images = [open_image(sm["image"]) for sm in batch]
    out = capture_batch(
        lm, images, [sm["question"] for sm in batch], max_new_tokens=settings["max_new_tokens"],
        prefill_rows=settings["prefill_rows"], prefill_layers=None if layers == "all" else layers, seed=seed,
        vision_encoder=venc["enabled"], vision_full=venc["full"], vision_rollout=venc["rollout"],
        llm_rollout=settings["llm_rollout"],
        metas=[{"image_id": sm["image_id"], "image_path": str(sm["image"]), "question_id": sm["question_id"]}
               for sm in batch])
    for s, sm in zip(out, batch, strict=True):
        objects = load_objects(sm.get("annotation"), sm.get("objects", []))
        s.boxes = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)
        s.labels = [o["label"] for o in objects]
        s.colours = [o.get("colour", "") for o in objects]
    return out


def _sample_name(model: dict, sm: dict) -> str:
    return f"{model['id']}/{sm['image_id']}__{sm['question_id']}"


def _extract_batch(lm, model: dict, batch: list[dict], settings: dict, seed: int) -> list:
    """:func:`_run_batch`, with a bad input reported as one line naming its sample (a failing batch is
    run again sample by sample to find it)."""
    from .errors import VlmattnError

    try:
        return _run_batch(lm, batch, settings, seed)
    except VlmattnError as e:
        if len(batch) == 1:
            raise type(e)(f"sample {_sample_name(model, batch[0])}: {e}") from e
    return [s for sm in batch for s in _extract_batch(lm, model, [sm], settings, seed)]


INDEX_COLUMNS = ["model", "image", "question", "file", "cache_key", "prompt_tokens", "new_tokens", "answer"]


@one_line_errors()
def extract_shard(model: dict, samples: list[dict], settings: dict, seed: int, attention_dir: str, index: str,
                  cache_dir: str, threads: int = 1) -> dict:
    """Extract one shard of samples of one model, loading it at most once.

    ``samples[i]`` (``image_id, question_id, question, image, annotation, objects``) is written to
    ``{attention_dir}/{image_id}__{question_id}.h5``; then ``index`` lists the shard's samples
    (:data:`INDEX_COLUMNS`: ids, file, cache key, prompt and generated token counts, answer). Each
    extracted file is first stored in ``cache_dir`` under :func:`sample_cache_key`; samples already
    there are linked from the cache without running the model, so a shard that gained a sample runs
    the model on that sample alone. ``settings`` is the ``extraction`` block (schema defaults filled in
    for keys it leaves out); the samples to extract run ``generation_batch`` per ``generate`` call, in
    order, and are written in the decode ``layout`` it names. Returns ``{"loaded": 0|1, "extracted": n,
    "reused": n}``. Bad input (unsupported family, unloadable checkpoint, rejected image, over-long prompt) stops
    the job with one line naming the model or sample; the index is then not written.
    """
    import h5py
    import torch

    from .errors import VlmattnError
    from .inference import load_model
    from .store import write_sample

    from .config import extraction_settings

    torch.set_num_threads(threads)
    settings = extraction_settings(settings)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    keys = [sample_cache_key(model, s, settings, seed) for s in samples]
    todo = [i for i, k in enumerate(keys) if not (cache / f"{k}.h5").is_file()]
    stats = {"loaded": 0, "extracted": 0, "reused": len(samples) - len(todo)}
    outs = [Path(attention_dir) / f"{s['image_id']}__{s['question_id']}.h5" for s in samples]
    try:
        if todo:
            lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"),
                            model.get("device", "cpu"))
            stats["loaded"] = 1
            log.info("loaded model %s for %d of %d samples", model["id"], len(todo), len(samples))
        size = settings["generation_batch"]
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        bar = progress(total=len(todo), desc=f"extract {model['id']}", unit="sample")
        for batch in batches:
            for i, s in zip(batch, _extract_batch(lm, model, [samples[i] for i in batch], settings, seed), strict=True):
                write_sample(cache / f"{keys[i]}.h5", s, attention_dtype=settings["attention_dtype"],
                             compression=settings["compression"], layout=settings["layout"])
                stats["extracted"] += 1
                log.info("%s: %d prompt tokens, %d generated: %r", _sample_name(model, samples[i]), len(s.input_ids),
                         s.n_steps, s.attrs["generated_text"])
            bar.update(len(batch))
        bar.close()
        rows = []
        for sm, k, out in zip(samples, keys, outs, strict=True):
            _place(cache / f"{k}.h5", out)
            with h5py.File(out, "r") as f:
                rows.append([model["id"], sm["image_id"], sm["question_id"], str(out), k, len(f["tokens/input_ids"]),
                             len(f["tokens/generated_ids"]), f.attrs["generated_text"]])
        write_table(pd.DataFrame(rows, columns=INDEX_COLUMNS), index)
    except BaseException:
        Path(index).unlink(missing_ok=True)
        raise
    log.info("model %s: %d extracted, %d from cache, model loaded %d time(s)", model["id"], stats["extracted"],
             stats["reused"], stats["loaded"])
    return stats


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """A shard index (:data:`INDEX_COLUMNS`), text kept as written (an answer ``NA`` stays text)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_tables(frames: list[pd.DataFrame], path: str | os.PathLike) -> None:
    """Rows of ``frames`` in order, as one CSV (format of :func:`write_table`). Frames with the same
    columns are written one after the other, so each value is formatted exactly as in a table of its
    own; otherwise they are concatenated (missing cells empty)."""
    if not frames or any(list(f.columns) != list(frames[0].columns) for f in frames):
        frames = [pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            for k, f in enumerate(frames):
                f.to_csv(out, index=False, header=k == 0, float_format="%.8g", lineterminator="\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@one_line_errors()
def metric(name: str, index: str, cfg: dict, out: str) -> None:
    """Metric ``name`` for every sample of one shard (its ``index``), rows in the index's order."""
    from .metrics import compute_table
    from .store import read_sample

    idx = read_index(index)
    frames = []
    for row in progress(idx.itertuples(index=False), total=len(idx), desc=f"{name}", unit="sample"):
        ids = {"model": row.model, "image": row.image, "question": row.question}
        frames.append(compute_table(name, read_sample(row.file), cfg, ids))
    write_tables(frames, out)


def _sample_key(row: list[str]) -> str:
    """Sort key of a metric-table row: ``{model}/{image}__{question}`` (its first three cells)."""
    return f"{row[0]}/{row[1]}__{row[2]}"


def _by_sample(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (text cells, model, image and question first) with its rows stably sorted by
    :func:`_sample_key`."""
    key = (df.iloc[:, 0] + "/" + df.iloc[:, 1] + "__" + df.iloc[:, 2]).to_numpy(dtype=str)
    return df.iloc[np.argsort(key, kind="stable")]


def aggregate(inputs: list[str], out: str) -> None:
    """Merge shard tables into one, rows ordered by sample (``{model}/{image}__{question}``) and, within
    a sample, as written. Each shard is sorted by sample and a sample lives in one shard, so this is a
    streaming k-way merge: cells pass through as written (text such as a generated token ``NA``
    survives), memory stays O(shards). Shards with other columns are concatenated through pandas."""
    import csv
    import heapq

    files = [open(p, newline="") for p in sorted(inputs)]  # noqa: SIM115 - closed below
    try:
        readers = [csv.reader(f) for f in files]
        headers = [next(r, None) for r in readers]
        if any(h != headers[0] for h in headers):
            frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(inputs)]
            write_table(_by_sample(pd.concat(frames, ignore_index=True)), out)
            return
        tmp = atomic_target(Path(out))
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                if headers and headers[0] is not None:
                    w.writerow(headers[0])
                w.writerows(heapq.merge(*readers, key=_sample_key))
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    finally:
        for f in files:
            f.close()


@one_line_errors()
def answers(indexes: list[str], expected: dict, out: str) -> None:
    """One row per sample: generated text, expected answer (if any) and whether they agree."""
    rows = []
    idx = _by_sample(pd.concat([read_index(p) for p in indexes], ignore_index=True))
    for r in idx.itertuples(index=False):
        exp = expected.get(r.question, {}).get(r.image)
        rows.append({"model": r.model, "image": r.image, "question": r.question, "answer": r.answer,
                     "expected": exp, "correct": None if exp is None else normalise_answer(r.answer) == exp.lower()})
    write_table(pd.DataFrame(rows, columns=["model", "image", "question", "answer", "expected", "correct"]), out)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A metric table, with the text columns ``head`` and ``token`` kept as strings."""
    return pd.read_csv(path, dtype={"head": str, "token": str})


@one_line_errors()
def plot(name: str, table: str, cfg: dict, out_dir: str) -> None:
    from .metrics import get_metric

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    get_metric(name).plot(read_table(table), cfg, Path(out_dir))


@one_line_errors()
def plot_samples(name: str, samples: list[dict], cfg: dict) -> None:
    """Per-sample figures of metric ``name``: for each ``{h5, image, out_dir}``, from its cache file
    (and its image) into ``out_dir``."""
    from .metrics import get_metric
    from .store import read_sample

    module = get_metric(name)
    for s in progress(samples, desc=f"{name} figures", unit="sample"):
        Path(s["out_dir"]).mkdir(parents=True, exist_ok=True)
        module.plot_sample(read_sample(s["h5"]), cfg, Path(s["out_dir"]), s["image"])


def normalise_answer(text: str) -> str:
    """First word, lower-cased, punctuation stripped."""
    words = text.strip().split()
    return words[0].strip(".,!?;:\"'").lower() if words else ""


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
    from .contrasts.analyses import TABLES, run
    from .errors import InputError

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

    from .contrasts.ablation import answer_token_id, causal_table
    from .inference import load_model, open_image

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
    from .contrasts import plots
    from .store import read_sample

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
    from .contrasts import plots

    plots.causal(pd.read_csv(summary), pd.read_csv(draws), Path(out), title=title)
