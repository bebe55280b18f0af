"""The image wing's workflow jobs: drawing the synthetic scenes."""

from __future__ import annotations

import json
from pathlib import Path

from ..tables import log


def draw_scene(image_id: str, size: int, png: str, ann: str, shapes: list[dict] | None = None, seed: int = 0) -> None:
    """Draw synthetic image ``image_id`` and its annotation: the given ``shapes`` (``scene_spec``
    dicts), or else the scene's own (:func:`vlmattn.images.synthetic.scene_shapes` with ``seed``)."""
    from .synthetic import scene_shapes, shapes_from_spec, write_scene

    Path(png).parent.mkdir(parents=True, exist_ok=True)
    drawn = shapes_from_spec(shapes) if shapes is not None else scene_shapes(image_id, seed)
    log.info("scene %s (%dx%d): %s", image_id, size, size, json.dumps([{"label": s.label, "colour": s.colour,
                                                                        "box": list(s.box)} for s in drawn]))
    write_scene(image_id, drawn, size, Path(png), Path(ann))
