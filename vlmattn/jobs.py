"""What each workflow job does, as plain functions (the scripts in ``workflow_scripts/`` only unpack
``snakemake.*`` and call these). Every output is written atomically."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from .store import atomic_target

log = logging.getLogger("vlmattn")


def log_to(path: str | os.PathLike) -> None:
    """Send stderr (tracebacks, progress bars) and the ``vlmattn`` logger to the job's log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(path, "w", buffering=1)  # noqa: SIM115 - lives for the job
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """CSV with a fixed float format (byte-identical on rerun), via a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    try:
        df.to_csv(tmp, index=False, float_format="%.8g", lineterminator="\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def draw_scene(image_id: str, size: int, png: str, ann: str) -> None:
    from .images.synthetic import DEFAULT_SCENES, write_scene

    Path(png).parent.mkdir(parents=True, exist_ok=True)
    write_scene(image_id, DEFAULT_SCENES[image_id], size, Path(png), Path(ann))


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


def validate(answers: str, spatial: str, concentration: str, cfg: dict, out: str) -> None:
    """The validation table (``vlmattn.validation``) from the pipeline's own tables."""
    from .validation import validate as run

    write_table(run(pd.read_csv(answers), read_table(spatial), read_table(concentration), cfg), out)


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


def _run_sample(lm, sm: dict, settings: dict, seed: int):
    """One :class:`~vlmattn.store.AttentionSample` for sample dict ``sm`` with its ground truth."""
    import numpy as np

    from .extract import extract as run, open_image

    venc = settings.get("vision_encoder", {})
    objects = load_objects(sm.get("annotation"), sm.get("objects", []))
    s = run(lm, open_image(sm["image"]), sm["question"], max_new_tokens=settings["max_new_tokens"],
            prefill_rows=settings["prefill_rows"], seed=seed, vision_encoder=venc.get("enabled", True),
            vision_full=venc.get("full", False), vision_rollout=venc.get("rollout", True),
            meta={"image_id": sm["image_id"], "image_path": str(sm["image"]), "question_id": sm["question_id"]})
    s.boxes = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)
    s.labels = [o["label"] for o in objects]
    s.colours = [o.get("colour", "") for o in objects]
    return s


def extract_batch(model: dict, samples: list[dict], settings: dict, seed: int, outs: list[str],
                  cache_dir: str, threads: int = 1) -> dict:
    """Extract a batch of samples of one model, loading it at most once.

    ``samples[i]`` (``image_id, question_id, question, image, annotation, objects``) is written to
    ``outs[i]``. Each extracted file is first stored in ``cache_dir`` under
    :func:`sample_cache_key`; samples already there are linked from the cache without running the
    model, so a batch whose membership shifted (a sample was added before it in sorted order)
    costs no extraction. Returns ``{"loaded": 0|1, "extracted": n, "reused": n}``.
    Bad input (unsupported family, unloadable checkpoint, rejected image, over-long prompt) stops
    the batch with one line naming the model or sample; no partial output is left.
    """
    import torch

    from .errors import VlmattnError
    from .extract import load_model
    from .store import write_sample

    torch.set_num_threads(threads)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    keys = [sample_cache_key(model, s, settings, seed) for s in samples]
    todo = [i for i, k in enumerate(keys) if not (cache / f"{k}.h5").is_file()]
    stats = {"loaded": 0, "extracted": 0, "reused": len(samples) - len(todo)}
    try:
        if todo:
            lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"),
                            model.get("device", "cpu"))
            stats["loaded"] = 1
            log.info("loaded model %s for %d of %d samples", model["id"], len(todo), len(samples))
        for i in todo:
            sm = samples[i]
            name = f"{model['id']}/{sm['image_id']}__{sm['question_id']}"
            try:
                s = _run_sample(lm, sm, settings, seed)
            except VlmattnError as e:
                raise type(e)(f"sample {name}: {e}") from e
            write_sample(cache / f"{keys[i]}.h5", s, attention_dtype=settings["attention_dtype"],
                         compression=settings.get("compression", 1))
            stats["extracted"] += 1
            log.info("%s: %d prompt tokens, %d generated: %r", name, len(s.input_ids), s.n_steps, s.attrs["generated_text"])
        for k, out in zip(keys, outs):
            _place(cache / f"{k}.h5", Path(out))
    except BaseException as e:
        for out in outs:  # all or nothing: no output of a failed batch is left behind
            Path(out).unlink(missing_ok=True)
        if not isinstance(e, VlmattnError):
            raise
        log.error("%s", e)
        raise SystemExit(f"vlmattn: {e}") from None
    log.info("model %s: %d extracted, %d from cache, model loaded %d time(s)", model["id"], stats["extracted"],
             stats["reused"], stats["loaded"])
    return stats


def extract(model: dict, image: str, objects: list[dict], question_id: str, image_id: str,
            question: str, settings: dict, seed: int, out: str, threads: int = 1) -> None:
    """Extract one sample into ``out`` (no cache): load the model, run it, write the HDF5 file."""
    import torch

    from .extract import load_model
    from .store import write_sample

    torch.set_num_threads(threads)
    lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"), model.get("device", "cpu"))
    sm = {"image": image, "objects": objects, "question_id": question_id, "image_id": image_id, "question": question}
    s = _run_sample(lm, sm, settings, seed)
    write_sample(out, s, attention_dtype=settings["attention_dtype"], compression=settings.get("compression", 1))
    log.info("%s / %s: %d prompt tokens, %d generated: %r", image_id, question_id, len(s.input_ids), s.n_steps,
             s.attrs["generated_text"])


def sample_ids(path: str) -> dict:
    """``model, image, question`` from a cache path ``.../{model}/{image}__{question}.<ext>``."""
    p = Path(path)
    image, question = p.stem.split("__")
    return {"model": p.parent.name, "image": image, "question": question}


def metric(name: str, h5: str, cfg: dict, out: str) -> None:
    from .metrics import compute_table
    from .store import read_sample

    write_table(compute_table(name, read_sample(h5), cfg, sample_ids(h5)), out)


def aggregate(inputs: list[str], out: str) -> None:
    """Concatenate per-sample tables in sorted path order (cells kept as written, so text such as a
    generated token ``NA`` survives)."""
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(inputs)]
    write_table(pd.concat(frames, ignore_index=True), out)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A metric table, with the text columns ``head`` and ``token`` kept as strings."""
    return pd.read_csv(path, dtype={"head": str, "token": str})


def plot(name: str, table: str, cfg: dict, out_dir: str) -> None:
    from .metrics import get_metric

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    get_metric(name).plot(read_table(table), cfg, Path(out_dir))


def plot_sample(name: str, h5: str, image: str | None, cfg: dict, out_dir: str) -> None:
    """Per-sample figures of metric ``name`` from one attention cache (and its image)."""
    from .metrics import get_metric
    from .store import read_sample

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    get_metric(name).plot_sample(read_sample(h5), cfg, Path(out_dir), image)


def normalise_answer(text: str) -> str:
    """First word, lower-cased, punctuation stripped."""
    words = text.strip().split()
    return words[0].strip(".,!?;:\"'").lower() if words else ""


def answers(inputs: list[str], expected: dict, out: str) -> None:
    """One row per sample: generated text, expected answer (if any) and whether they agree."""
    import h5py

    rows = []
    for p in sorted(inputs):
        ids = sample_ids(p)
        with h5py.File(p, "r") as f:
            text = f.attrs["generated_text"]
        exp = expected.get(ids["question"], {}).get(ids["image"])
        rows.append({**ids, "answer": text, "expected": exp,
                     "correct": None if exp is None else normalise_answer(text) == exp.lower()})
    write_table(pd.DataFrame(rows), out)
