"""The model wing's workflow jobs: building random or untrained models and training the shapes-task
model, offline."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..tables import log


def build_model(build: dict, out_dir: str, threads: int = 1, family: str = "llava") -> None:
    """Build a model of ``family`` offline into ``out_dir`` (written to a sibling temp dir, then renamed).

    ``random``: random weights of the given sizes; ``untrained``: the shapes-task recipe's model
    before training (``vlmattn.models.train.TrainSpec`` fields), the baseline of a trained twin.
    """
    import shutil

    import torch

    from . import replicas, tiled, toy

    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if build["kind"] == "untrained" and family == "llava":
            from . import train

            model, processor = train.build(train.TrainSpec.from_dict(build.get("spec")))
        elif build["kind"] == "random" and family == "llava":
            model, processor = toy.build_toy(toy.ToySpec.from_dict(build.get("spec")))
        elif build["kind"] == "random" and family in tiled.FAMILIES:
            model, processor = tiled.build_tiled(family, tiled.TiledSpec.from_dict(build.get("spec")))
        elif build["kind"] == "random":
            model, processor = replicas.build_replica(family, replicas.ReplicaSpec.from_dict(build.get("spec")))
        else:
            raise ValueError(f"model build kind {build['kind']!r} is not available for family {family!r}")
        toy.save(model, processor, tmp)
        log.info("built %s %s model with %d parameters", build["kind"], family,
                 sum(p.numel() for p in model.parameters()))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def train_model(kind: str, spec: dict, out_dir: str, report_csv: str, report_png: str) -> None:
    """Train the toy LLaVA and write its training report: ``kind`` ``trained``, the shapes task
    (``vlmattn.models.train``); ``trained_on_sheet``, a sample sheet (``vlmattn.models.train_sheet``)."""
    if kind == "trained_on_sheet":
        from . import train_sheet

        report = train_sheet.train_on_sheet(train_sheet.SheetTrainSpec.from_dict(spec), out_dir,
                                            report_csv=report_csv, report_png=report_png)
    else:
        from . import train

        report = train.train(train.TrainSpec.from_dict(spec), out_dir, report_csv, report_png)
    final = report[report.step == report.step.max()]
    log.info("held-out accuracy: %s", dict(zip(final.question_type, final.heldout_accuracy, strict=True)))
