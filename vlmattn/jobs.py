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
    """Build a model of ``family`` offline into ``out_dir`` (written to a sibling temp dir, then renamed)."""
    import shutil

    import torch

    from .models import replicas, toy

    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if build["kind"] != "random":
            raise ValueError(f"unknown model build kind {build['kind']!r}")
        if family == "llava":
            model, processor = toy.build_toy(toy.ToySpec.from_dict(build.get("spec")))
        else:
            model, processor = replicas.build_replica(family, replicas.ReplicaSpec.from_dict(build.get("spec")))
        toy.save(model, processor, tmp)
        log.info("built %s %s model with %d parameters", build["kind"], family, sum(p.numel() for p in model.parameters()))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_objects(annotation: str | None, objects: list[dict]) -> list[dict]:
    if annotation:
        return json.loads(Path(annotation).read_text())["objects"]
    return objects


def extract(model: dict, image: str, objects: list[dict], question_id: str, image_id: str,
            question: str, settings: dict, seed: int, out: str, threads: int = 1) -> None:
    """Load the model, run one sample with capture, write its HDF5 file."""
    import numpy as np
    import torch

    from .extract import extract as run, load_model, open_image
    from .store import write_sample

    torch.set_num_threads(threads)
    lm = load_model(model["id"], model["family"], model["path"], model.get("dtype", "float32"), model.get("device", "cpu"))
    img = open_image(image)
    venc = settings.get("vision_encoder", {})
    s = run(lm, img, question, max_new_tokens=settings["max_new_tokens"], prefill_rows=settings["prefill_rows"],
            seed=seed, vision_encoder=venc.get("enabled", True), vision_full=venc.get("full", False),
            meta={"image_id": image_id, "image_path": str(image), "question_id": question_id})
    s.boxes = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)
    s.labels = [o["label"] for o in objects]
    s.colours = [o.get("colour", "") for o in objects]
    write_sample(out, s, attention_dtype=settings["attention_dtype"])
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
    """Concatenate per-sample tables in sorted path order."""
    write_table(pd.concat([pd.read_csv(p, dtype={"head": str}) for p in sorted(inputs)], ignore_index=True), out)


def plot(name: str, table: str, cfg: dict, out_dir: str) -> None:
    from .metrics import get_metric

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    get_metric(name).plot(pd.read_csv(table, dtype={"head": str}), cfg, Path(out_dir))


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
