"""Evaluation sets of the online runs (pruning, learned pruners): the built-in shapes task, a sample
sheet, or POPE questions generated from COCO annotations (:func:`evaluation_items`, config
``pruning.online.eval_set``). Every item is an :class:`EvalItem`; its ``references`` are scored by the
set's rule (:mod:`vlmattn.scoring`).

**Shapes** (``kind: shapes``): a held-out set of the synthetic shapes task for the toy model.

Items are drawn by the task's own generator (:func:`vlmattn.models.shapes_task.sample_example`) from one
``numpy.random.default_rng(seed)`` stream, in a fixed order: item i asks question type
``QUESTION_TYPES[i mod 4]``, and the j-th position question (j = 0, 1, …) asks about corner
``CORNERS[j mod 4]``. With n divisible by 16 every question type holds n / 4 items and every corner
n / 16; otherwise the counts differ by at most one. Scenes follow the default
:class:`~vlmattn.models.shapes_task.SceneSpec` (the distribution of training's held-out scenes) and are
drawn at ``size`` pixels, as the pipeline's synthetic images are (224).

Seed: :data:`EVAL_SEED` (2 000 029) differs from the seeds of the toy model's training batches
(``TrainSpec.seed`` = 0) and of its held-out set (``TrainSpec.heldout_seed`` = 1 000 003), so the
items are neither training scenes nor the scenes the training report's accuracy was measured on;
:func:`evaluation_set` refuses those two seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..models import shapes_task as task

#: default seed of the pruning evaluation set (distinct from training's batch and held-out seeds)
EVAL_SEED = 2_000_029
#: seeds of the toy model's training batches and held-out set (``TrainSpec.seed``, ``TrainSpec.heldout_seed``)
TRAINING_SEEDS = (0, 1_000_003)


@dataclass(frozen=True)
class EvalItem:
    """One evaluation question: ``index`` in the set, the ``image`` (RGB), the exact ``question`` text,
    the expected ``answer`` (the first reference), ``qtype`` (the shapes task's question type, a
    sheet's ``answer_type``, else ``"all"``), ``corner`` (shapes position questions, else None), the
    ground-truth object ``boxes [O, 4]`` (float64 pixel boxes ``x0, y0, x1, y1``, exclusive
    right/bottom), every reference answer (``references``; VQA's ten) and, for multiple choice,
    ``n_options``."""

    index: int
    image: Image.Image
    question: str
    answer: str
    qtype: str
    corner: str | None
    boxes: np.ndarray
    references: tuple[str, ...] = ()
    n_options: int | None = None

    @property
    def answers(self) -> tuple[str, ...]:
        """The reference answers a scoring rule reads (``references``, else ``(answer,)``)."""
        return self.references or (self.answer,)


def evaluation_set(n: int, *, seed: int = EVAL_SEED, size: int = 224) -> list[EvalItem]:
    """``n`` held-out items, question types and corners interleaved as in the module docstring.

    Deterministic in ``(n, seed, size)``, and a prefix of a longer set with the same seed and size.
    Raises ValueError for n < 1, a size below 16 pixels, or a seed used by the toy model's training.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if seed in TRAINING_SEEDS:
        raise ValueError(f"seed {seed} is one of the toy model's training seeds {TRAINING_SEEDS}; "
                         f"use another (default {EVAL_SEED})")
    rng = np.random.default_rng(seed)
    items, n_position = [], 0
    for i in range(int(n)):
        qtype = task.QUESTION_TYPES[i % len(task.QUESTION_TYPES)]
        corner = None
        if qtype == "position":
            corner = task.CORNERS[n_position % len(task.CORNERS)]
            n_position += 1
        ex = task.sample_example(rng, size, qtype, corner)
        boxes = np.asarray(ex.boxes, np.float64).reshape(-1, 4)
        items.append(EvalItem(i, ex.image, ex.question, ex.answer, ex.qtype, ex.corner, boxes))
    return items


#: the kinds of ``pruning.online.eval_set``
KINDS = ("shapes", "sheet", "pope")


def sheet_set(path: str, *, annotations: str | None = None, base_dir: Path = Path(".")) -> list[EvalItem]:
    """The rows of the sample sheet ``path`` (:func:`vlmattn.datasets.read_sheet`) as items, in sheet
    order: each row's image, question text, reference answers (``answers``, else ``expected``),
    ``answer_type`` (``qtype``, "all" when absent) and ``n_options``; boxes from the COCO file
    ``annotations`` when given (images it does not annotate have none). One-line InputError for a row
    without a question text or a reference answer, or an unreadable image."""
    from ..datasets import coco_objects, read_coco, read_sheet

    sheet = read_sheet(path, base_dir)
    coco = read_coco(annotations, base_dir) if annotations else None
    items = []
    for i, row in enumerate(sheet.rows):
        where = f"evaluation sheet {path} line {row.line}"
        if row.question is None:
            raise InputError(f"{where}: an evaluation item needs the question text (column 'question')")
        if not row.answers:
            raise InputError(f"{where}: an evaluation item needs a reference answer (column 'answers' or 'expected')")
        file = base_dir / row.image_path
        try:
            with Image.open(file) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as e:
            raise InputError(f"{where}: cannot read image {row.image_path}: {e}") from None
        objects = coco_objects(coco, annotations, row.image_path, image.size) if coco else []
        boxes = np.asarray([o["box"] for o in objects], np.float64).reshape(-1, 4)
        items.append(EvalItem(i, image, row.question, row.answers[0], row.answer_type or "all", None, boxes,
                              row.answers, row.n_options))
    return items


def pope_set(annotations: str, images: str, *, strategy: str, per_image: int, n_images: int | None, seed: int,
             base_dir: Path = Path(".")) -> list[EvalItem]:
    """POPE questions (:func:`vlmattn.pope.pope_questions`) about the images of folder ``images``
    annotated in the COCO file ``annotations``, in question order; ``qtype`` is the strategy, the boxes
    those of the image's objects. InputError for an annotated image missing from the folder."""
    from ..datasets import coco_objects, read_coco
    from ..pope import coco_object_lists, pope_questions

    coco = read_coco(annotations, base_dir)
    try:
        questions = pope_questions(coco_object_lists(coco), strategy=strategy, per_image=per_image,
                                   n_images=n_images, seed=seed)
    except ValueError as e:
        raise InputError(f"config pruning.online.eval_set.pope: {e}") from None
    opened: dict[str, tuple] = {}
    items = []
    for i, q in enumerate(questions):
        if q.image not in opened:
            file = base_dir / images / q.image
            if not file.is_file():
                raise InputError(f"annotations {annotations}: image {q.image} is not in {images}")
            with Image.open(file) as im:
                image = im.convert("RGB")
            objects = coco_objects(coco, annotations, q.image, image.size)
            opened[q.image] = (image, np.asarray([o["box"] for o in objects], np.float64).reshape(-1, 4))
        image, boxes = opened[q.image]
        items.append(EvalItem(i, image, q.question, q.answer, strategy, None, boxes, (q.answer,)))
    return items


def evaluation_items(eval_set: dict, *, n_items: int, seed: int, base_dir: Path = Path(".")) -> list[EvalItem]:
    """The first ``n_items`` items of the configured set ``eval_set`` (``pruning.online.eval_set``:
    ``kind`` in :data:`KINDS`, and ``sheet``/``annotations``/``images``/``pope`` as the kind needs):
    :func:`evaluation_set` (``seed``) for shapes, :func:`sheet_set`, :func:`pope_set` (``seed`` draws its
    images and random negatives). InputError when the set holds fewer than ``n_items`` items."""
    kind = eval_set["kind"]
    if kind == "shapes":
        return evaluation_set(n_items, seed=seed)
    if kind == "sheet":
        items = sheet_set(eval_set["sheet"], annotations=eval_set["annotations"], base_dir=base_dir)
    elif kind == "pope":
        p = eval_set["pope"]
        items = pope_set(eval_set["annotations"], eval_set["images"], strategy=p["strategy"],
                         per_image=p["per_image"], n_images=p["n_images"], seed=seed, base_dir=base_dir)
    else:
        raise ValueError(f"eval_set kind must be one of {KINDS}, got {kind!r}")
    if len(items) < n_items:
        raise InputError(f"config pruning.online.n_items: {n_items} items asked for, the {kind} set holds "
                         f"{len(items)}")
    return items[:n_items]
