"""Deterministic synthetic shape scenes with pixel-exact ground truth.

A scene is a list of :class:`Shape` drawn with PIL (no antialiasing, so the same spec gives the same
bytes). Each shape's annotation is its label, colour name and pixel box ``[x0, y0, x1, y1]``
(exclusive right/bottom edge) in the image.

Two kinds of scene: the named :data:`DEFAULT_SCENES`, and the generated corner pairs
(:func:`corner_pair`): pair ``i`` is the images ``corner_{i:03d}_a`` and ``corner_{i:03d}_b``, the
same scene with and without one object inside the top-left quadrant.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "white": (255, 255, 255),
    "purple": (150, 60, 200),
}
SHAPES = ("triangle", "square", "circle")
BACKGROUND = (0, 0, 0)


@dataclass(frozen=True)
class Shape:
    """One object: ``label`` in :data:`SHAPES`, ``colour`` in :data:`COLOURS`, box in fractions of the side."""

    label: str
    colour: str
    box: tuple[float, float, float, float]

    def pixel_box(self, size: int) -> list[int]:
        x0, y0, x1, y1 = (round(v * size) for v in self.box)
        return [x0, y0, x1, y1]


# Scene id -> shapes. The first two are the paired images of the top-left experiment.
DEFAULT_SCENES: dict[str, tuple[Shape, ...]] = {
    "triangle_topleft": (
        Shape("triangle", "white", (0.04, 0.04, 0.30, 0.30)),
        Shape("square", "red", (0.40, 0.62, 0.60, 0.82)),
    ),
    "square_only": (Shape("square", "red", (0.40, 0.62, 0.60, 0.82)),),
    "green_circle": (Shape("circle", "green", (0.35, 0.35, 0.65, 0.65)),),
    "blue_square_right": (Shape("square", "blue", (0.66, 0.38, 0.92, 0.64)),),
    "two_shapes": (
        Shape("circle", "yellow", (0.10, 0.55, 0.35, 0.80)),
        Shape("triangle", "purple", (0.60, 0.12, 0.88, 0.40)),
    ),
    "three_shapes": (
        Shape("square", "green", (0.08, 0.08, 0.28, 0.28)),
        Shape("circle", "red", (0.62, 0.10, 0.84, 0.32)),
        Shape("triangle", "blue", (0.38, 0.60, 0.62, 0.86)),
    ),
}


# --- corner pairs -----------------------------------------------------------------------------------
# All geometry in hundredths of the image side, so that a pair's spec is exact and readable.
TOP_LEFT = (0.0, 0.0, 0.5, 0.5)  # the top-left quadrant [0, ½) × [0, ½), fractions of the side
CORNER_QUESTION = "top_left"  # the question whose expected answers a pair carries ...
CORNER_ANSWERS = ("yes", "no")  # ... for its A and its B image
CORNER_SIDE = (16, 40)  # side of the corner object (hundredths, inclusive)
OTHER_SIDE = (16, 30)  # side of the other objects
OTHER_COUNT = (1, 1)  # how many other objects: B holds one, A two (the scenes the toy model knows)
MARGIN = 2  # distance of every box from the image border and from the quadrant's edges
GAP = 4  # least distance between two objects' boxes
_CORNER_ID = re.compile(r"corner_(\d{3,})_([ab])")


@dataclass(frozen=True)
class CornerPair:
    """Pair ``index``: image A is ``corner`` plus ``others``, image B is ``others`` alone. ``corner`` lies
    inside the top-left quadrant; ``others`` touch neither the quadrant nor each other."""

    index: int
    corner: Shape
    others: tuple[Shape, ...]

    @property
    def ids(self) -> tuple[str, str]:
        return corner_pair_ids(self.index)

    @property
    def a(self) -> tuple[Shape, ...]:
        return (self.corner, *self.others)

    @property
    def b(self) -> tuple[Shape, ...]:
        return self.others


def corner_pair_ids(index: int) -> tuple[str, str]:
    """Image ids ``(corner_{i:03d}_a, corner_{i:03d}_b)`` of pair ``index``."""
    if index < 0:
        raise ValueError(f"corner pair index must be >= 0, got {index}")
    return f"corner_{index:03d}_a", f"corner_{index:03d}_b"


def corner_pairs(count: int) -> list[tuple[str, str]]:
    """Ids ``[(id_a, id_b), ...]`` of the first ``count`` corner pairs."""
    return [corner_pair_ids(i) for i in range(count)]


def parse_corner_id(image_id: str) -> tuple[int, str] | None:
    """``(index, "a" | "b")`` of a corner-pair image id, ``None`` for any other id."""
    m = _CORNER_ID.fullmatch(image_id)
    if m is None or f"{int(m[1]):03d}" != m[1]:
        return None
    return int(m[1]), m[2]


def _box(x0: int, y0: int, side: int) -> tuple[float, float, float, float]:
    return (x0 / 100, y0 / 100, (x0 + side) / 100, (y0 + side) / 100)


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def corner_pair(seed: int, index: int) -> CornerPair:
    """Pair ``index`` of the run with ``seed``: a function of the two alone (so pair ``i`` is the same
    whatever the number of pairs). The corner object has a random shape, colour and side in
    :data:`CORNER_SIDE` and lies inside the top-left quadrant, :data:`MARGIN` from its edges; :data:`OTHER_COUNT`
    other objects (one) (side in :data:`OTHER_SIDE`) lie outside the quadrant (:data:`MARGIN` from it) and
    at least :data:`GAP` apart, all in hundredths of the side."""
    rng = random.Random(f"vlmattn.corner_pairs:{int(seed)}:{int(index)}")
    half = 50 - MARGIN
    side = rng.randint(*CORNER_SIDE)
    x0, y0 = rng.randint(MARGIN, half - side), rng.randint(MARGIN, half - side)
    corner = Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), _box(x0, y0, side))
    placed: list[tuple[int, int, int, int]] = []
    others = []
    for _ in range(rng.randint(*OTHER_COUNT)):
        side = rng.randint(*OTHER_SIDE)
        for _ in range(10_000):
            x0, y0 = rng.randint(MARGIN, 100 - MARGIN - side), rng.randint(MARGIN, 100 - MARGIN - side)
            box = (x0, y0, x0 + side, y0 + side)
            if (x0 >= 50 + MARGIN or y0 >= 50 + MARGIN) and all(_apart(box, p, GAP) for p in placed):
                break
        else:  # pragma: no cover - two boxes of side <= 0.30 always fit beside the quadrant
            raise RuntimeError(f"corner pair {index}: no room for another object")
        placed.append(box)
        others.append(Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), _box(x0, y0, side)))
    return CornerPair(index, corner, tuple(others))


def scene_shapes(image_id: str, seed: int = 0) -> tuple[Shape, ...]:
    """The shapes of synthetic image ``image_id``: a named scene of :data:`DEFAULT_SCENES` or a
    corner-pair image (which depends on ``seed``)."""
    if image_id in DEFAULT_SCENES:
        return DEFAULT_SCENES[image_id]
    corner = parse_corner_id(image_id)
    if corner is None:
        raise KeyError(f"{image_id!r} is not a synthetic scene (known: {', '.join(DEFAULT_SCENES)}, corner_NNN_a/b)")
    pair = corner_pair(seed, corner[0])
    return pair.a if corner[1] == "a" else pair.b


def shapes_from_spec(spec: list[dict]) -> tuple[Shape, ...]:
    """Inverse of :func:`scene_spec`."""
    return tuple(Shape(d["label"], d["colour"], tuple(d["box"])) for d in spec)


def draw(shapes: tuple[Shape, ...] | list[Shape], size: int) -> Image.Image:
    """Render ``shapes`` on a black ``size``×``size`` RGB canvas."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    d = ImageDraw.Draw(img)
    for s in shapes:
        x0, y0, x1, y1 = s.pixel_box(size)
        fill = COLOURS[s.colour]
        if s.label == "square":
            d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif s.label == "circle":
            d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif s.label == "triangle":
            d.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)
        else:
            raise ValueError(f"unknown shape label {s.label!r}")
    return img


def annotation(image_id: str, shapes, size: int) -> dict:
    """Ground truth of a scene: ``{"image": id, "width", "height", "objects": [{label, colour, box}]}``."""
    return {
        "image": image_id,
        "width": size,
        "height": size,
        "objects": [{"label": s.label, "colour": s.colour, "box": s.pixel_box(size)} for s in shapes],
    }


def write_scene(image_id: str, shapes, size: int, png: Path, ann: Path) -> None:
    """Write the PNG and its JSON annotation (deterministic bytes: no PNG metadata, sorted keys)."""
    draw(shapes, size).save(png, format="PNG", optimize=False)
    Path(ann).write_text(json.dumps(annotation(image_id, shapes, size), indent=1, sort_keys=True) + "\n")


def scene_spec(image_id: str, seed: int = 0) -> list[dict]:
    """The shapes of synthetic image ``image_id`` (:func:`scene_shapes`) as plain dicts
    ``{label, colour, box}`` (box in fractions of the side): what the draw rule is given and logs."""
    return [{**asdict(s), "box": list(s.box)} for s in scene_shapes(image_id, seed)]
