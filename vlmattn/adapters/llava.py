"""LLaVA-1.5 (``llava``): CLIP tower, "default" feature strategy (CLS dropped), square crop.

The CLIP image processor resizes the shortest edge to ``S`` (aspect kept) and centre-crops
``crop_h × crop_w``; token (r, c) covers crop pixels ``[c·p, (c+1)·p) × [r·p, (r+1)·p)``, which map
back to the original image by undoing the crop offset and the resize scale.
"""

from __future__ import annotations

import numpy as np

from .base import Adapter, VisionLayout, token_spans


def _size(d, key_pairs):
    for k in key_pairs:
        if isinstance(d, dict) and k in d and d[k]:
            return d[k]
        if hasattr(d, k) and getattr(d, k):
            return getattr(d, k)
    return None


def clip_resized_size(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """Size after CLIP's aspect-preserving resize of the shortest edge (transformers' integer rule)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (shortest_edge, new_long) if width <= height else (new_long, shortest_edge)


class LlavaAdapter(Adapter):
    family = "llava"
    model_types = ("llava",)

    def vision_layout(self, model, processor, inputs, image_size):
        ip = processor.image_processor
        width, height = image_size
        patch = int(processor.patch_size)
        crop_h, crop_w = inputs["pixel_values"].shape[-2:]
        if getattr(ip, "do_resize", True):
            shortest = _size(ip.size, ("shortest_edge",))
            if shortest:
                rw, rh = clip_resized_size(width, height, int(shortest))
            else:
                rh, rw = _size(ip.size, ("height",)), _size(ip.size, ("width",))
        else:
            rw, rh = width, height
        if getattr(ip, "do_center_crop", True):
            top, left = (rh - crop_h) // 2, (rw - crop_w) // 2
        else:
            top = left = 0
        rows, cols = crop_h // patch, crop_w // patch
        r, c = np.divmod(np.arange(rows * cols), cols)
        sx, sy = width / rw, height / rh
        boxes = np.stack(
            [(left + c * patch) * sx, (top + r * patch) * sy, (left + (c + 1) * patch) * sx, (top + (r + 1) * patch) * sy],
            axis=1,
        )
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        spans = token_spans(inputs["input_ids"][0], model.config.image_token_id)
        return VisionLayout(spans=spans, grids=np.array([[rows, cols]] * len(spans), dtype=np.int64), token_boxes=np.tile(boxes, (len(spans), 1)))
