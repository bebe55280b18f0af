"""Deterministic synthetic shape scenes with pixel-exact ground truth.

A scene is a list of :class:`Shape` drawn with PIL (no antialiasing, so the same spec gives the same
bytes). Each shape's annotation is its label, colour name and pixel box ``[x0, y0, x1, y1]``
(exclusive right/bottom edge) in the image.
"""

from __future__ import annotations

import json
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


def scene_spec(image_id: str) -> list[dict]:
    """The default scene ``image_id`` as plain dicts (for logs and provenance)."""
    return [asdict(s) for s in DEFAULT_SCENES[image_id]]
