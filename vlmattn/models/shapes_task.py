"""The synthetic shapes question-answering task: scenes, questions and the answer rule.

A scene is one or two shapes (:data:`~vlmattn.images.synthetic.SHAPES`, any colour of
:data:`~vlmattn.images.synthetic.COLOURS`) with square boxes of side
``s = min_side + (max_side - min_side) · u^size_power``, ``u ~ U[0, 1)`` (fractions of the image side;
``size_power = 1``, the default, is uniform and larger powers favour small shapes), placed uniformly at
random on black; the boxes of a two-shape scene are at least ``gap`` apart. Questions and one-word answers:

=========  ===================================================  ==========================
type       question                                             answer
=========  ===================================================  ==========================
shape      "What shape is in the image?" (one shape)            its label, e.g. "triangle"
colour     "What colour is the shape?" (one shape)              its colour, e.g. "red"
count      "How many shapes are there?" (one or two, 50/50)     "one" / "two"
position   "Is there anything in the {corner} corner?"          "yes" / "no" (50/50)
=========  ===================================================  ==========================

Corner rule. The ``{corner}`` corner is the image quadrant ``Q`` (e.g. top left =
``[0, ½) × [0, ½)`` in fractions of the side). With box ``B = [x0, x1) × [y0, y1)``:

    "yes"  iff  some object has B ⊆ Q          (the whole object lies in the quadrant)
    "no"   iff  no object has area(B ∩ Q) > 0  (nothing touches the quadrant)

A scene where an object straddles into ``Q`` without lying inside it satisfies neither, and the
question is never asked about it, so every positive and negative is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from vlmattn.images.synthetic import COLOURS, SHAPES, Shape, draw

QUESTION_TYPES = ("shape", "colour", "count", "position")
CORNERS = ("top left", "top right", "bottom left", "bottom right")
QUESTIONS = {
    "shape": "What shape is in the image?",
    "colour": "What colour is the shape?",
    "count": "How many shapes are there?",
}
POSITION_QUESTION = "Is there anything in the {corner} corner?"
COUNT_WORDS = ("one", "two")
ANSWERS = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "count": COUNT_WORDS,
    "position": ("yes", "no"),
}
# Quadrant of each corner as (x0, y0, x1, y1) in fractions of the side.
QUADRANTS = {
    "top left": (0.0, 0.0, 0.5, 0.5),
    "top right": (0.5, 0.0, 1.0, 0.5),
    "bottom left": (0.0, 0.5, 0.5, 1.0),
    "bottom right": (0.5, 0.5, 1.0, 1.0),
}


@dataclass(frozen=True)
class SceneSpec:
    """Scene distribution: box side ``min_side + (max_side - min_side) · u^size_power`` and ``gap``
    between two boxes (fractions of the image side)."""

    min_side: float = 0.2
    max_side: float = 0.42
    gap: float = 0.04
    size_power: float = 1.0


@dataclass(frozen=True)
class Example:
    """One sample: ``image`` (``size``×``size`` RGB), question, answer word and the scene's shapes."""

    image: Image.Image
    question: str
    answer: str
    qtype: str
    corner: str | None
    shapes: tuple[Shape, ...]

    @property
    def boxes(self) -> list[list[int]]:
        """Ground-truth pixel boxes ``[x0, y0, x1, y1]`` (exclusive right/bottom) in ``image``."""
        return [s.pixel_box(self.image.width) for s in self.shapes]


def question_text(qtype: str, corner: str | None = None) -> str:
    """The exact question of ``qtype`` (``corner`` is required for ``"position"``)."""
    if qtype == "position":
        if corner not in QUADRANTS:
            raise ValueError(f"position questions need a corner in {CORNERS}, got {corner!r}")
        return POSITION_QUESTION.format(corner=corner)
    return QUESTIONS[qtype]


def corner_answer(shapes, corner: str) -> str | None:
    """``"yes"``/``"no"`` by the corner rule (module docstring), ``None`` where it is undefined."""
    qx0, qy0, qx1, qy1 = QUADRANTS[corner]
    inside = touches = False
    for s in shapes:
        x0, y0, x1, y1 = s.box
        inside |= x0 >= qx0 and y0 >= qy0 and x1 <= qx1 and y1 <= qy1
        touches |= min(x1, qx1) > max(x0, qx0) and min(y1, qy1) > max(y0, qy0)
    if inside:
        return "yes"
    return None if touches else "no"


def answer(qtype: str, shapes, corner: str | None = None) -> str | None:
    """Truth of question ``qtype`` about ``shapes`` (``None`` where the question is not asked)."""
    if qtype == "position":
        return corner_answer(shapes, corner)
    if qtype == "count":
        return COUNT_WORDS[len(shapes) - 1] if 1 <= len(shapes) <= len(COUNT_WORDS) else None
    if len(shapes) != 1:
        return None
    return shapes[0].label if qtype == "shape" else shapes[0].colour


def sample_scene(rng: np.random.Generator, n: int, spec: SceneSpec = SceneSpec()) -> tuple[Shape, ...]:
    """``n`` random shapes (non-overlapping boxes, ``spec.gap`` apart), boxes rounded to 1/1000."""
    shapes: list[Shape] = []
    while len(shapes) < n:
        side = spec.min_side + (spec.max_side - spec.min_side) * rng.uniform() ** spec.size_power
        x0, y0 = rng.uniform(0.0, 1.0 - side, size=2)
        box = tuple(round(float(v), 3) for v in (x0, y0, x0 + side, y0 + side))
        label = SHAPES[rng.integers(len(SHAPES))]
        colour = tuple(COLOURS)[rng.integers(len(COLOURS))]
        if all(_apart(box, s.box, spec.gap) for s in shapes):
            shapes.append(Shape(label, colour, box))
    return tuple(shapes)


def _apart(a, b, gap: float) -> bool:
    return a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap or b[1] >= a[3] + gap


def sample_example(
    rng: np.random.Generator,
    size: int = 64,
    qtype: str | None = None,
    corner: str | None = None,
    spec: SceneSpec = SceneSpec(),
) -> Example:
    """Draw one example; ``qtype``/``corner`` default to uniform choices.

    shape/colour: one shape. count: one or two shapes (50/50). position: the answer is drawn first
    (50/50 yes/no), then one or two shapes (50/50) are re-sampled until the corner rule gives it.
    """
    qtype = qtype or QUESTION_TYPES[rng.integers(len(QUESTION_TYPES))]
    if qtype in ("shape", "colour"):
        shapes = sample_scene(rng, 1, spec)
    elif qtype == "count":
        shapes = sample_scene(rng, 1 + int(rng.integers(2)), spec)
    elif qtype == "position":
        corner = corner or CORNERS[rng.integers(len(CORNERS))]
        want = ("yes", "no")[rng.integers(2)]
        n = 1 + int(rng.integers(2))
        while corner_answer(shapes := sample_scene(rng, n, spec), corner) != want:
            pass
    else:
        raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")
    return Example(
        image=draw(shapes, size),
        question=question_text(qtype, corner),
        answer=answer(qtype, shapes, corner),
        qtype=qtype,
        corner=corner if qtype == "position" else None,
        shapes=shapes,
    )
