"""A held-out evaluation set of the synthetic shapes task for online pruning runs of the toy model.

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

import numpy as np
from PIL import Image

from ..models import shapes_task as task

#: default seed of the pruning evaluation set (distinct from training's batch and held-out seeds)
EVAL_SEED = 2_000_029
#: seeds of the toy model's training batches and held-out set (``TrainSpec.seed``, ``TrainSpec.heldout_seed``)
TRAINING_SEEDS = (0, 1_000_003)


@dataclass(frozen=True)
class EvalItem:
    """One evaluation question: ``index`` in the set, the ``image`` (``size``×``size`` RGB), the exact
    ``question`` text, the expected one-word ``answer``, ``qtype`` (one of ``QUESTION_TYPES``), ``corner``
    (position questions, else None) and the ground-truth object ``boxes [O, 4]`` (float64 pixel boxes
    ``x0, y0, x1, y1``, exclusive right/bottom)."""

    index: int
    image: Image.Image
    question: str
    answer: str
    qtype: str
    corner: str | None
    boxes: np.ndarray


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
