"""The extraction wing's workflow jobs: capturing each shard's samples into the per-sample HDF5
cache (content-keyed, reused across runs) and the answers table. Every output is written
atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..answers import normalise_answer
from ..progress import progress
from ..tables import INDEX_COLUMNS, _by_sample, atomic_target, log, one_line_errors, read_index, write_table


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

    from .. import __version__
    from ..store import settings_json

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
    from one batched generation (:func:`vlmattn.engine.inference.capture_batch`)."""
    import numpy as np

    from ..engine.inference import capture_batch, open_image

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
    from ..errors import VlmattnError

    try:
        return _run_batch(lm, batch, settings, seed)
    except VlmattnError as e:
        if len(batch) == 1:
            raise type(e)(f"sample {_sample_name(model, batch[0])}: {e}") from e
    return [s for sm in batch for s in _extract_batch(lm, model, [sm], settings, seed)]


@one_line_errors()
def extract_shard(model: dict, samples: list[dict], settings: dict, seed: int, attention_dir: str, index: str,
                  cache_dir: str, threads: int = 1) -> dict:
    """Extract one shard of samples of one model, loading it at most once.

    ``samples[i]`` (``image_id, question_id, question, image, annotation, objects``) is written to
    ``{attention_dir}/{image_id}__{question_id}.h5``; then ``index`` lists the shard's samples
    (:data:`INDEX_COLUMNS`: ids, file, cache key, prompt and generated token counts, answer). Each
    extracted file is first stored in ``cache_dir`` under :func:`sample_cache_key`; samples already
    there are linked from the cache without running the model, so a shard that gained a sample runs
    the model on that sample alone. ``settings`` is the extraction job's options
    (:func:`vlmattn.extraction.options.extract_options`: the validated block, defaults filled in); the
    samples to extract run ``generation_batch`` per ``generate`` call, in order, and are written in the
    decode ``layout`` it names. Returns ``{"loaded": 0|1, "extracted": n, "reused": n}``. Bad input
    (unsupported family, unloadable checkpoint, rejected image, over-long prompt) stops the job with one
    line naming the model or sample; the index is then not written.
    """
    import h5py
    import torch

    from ..engine.inference import load_model
    from ..store import write_sample

    torch.set_num_threads(threads)
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
