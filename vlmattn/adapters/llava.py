"""LLaVA-1.5 (``llava``): CLIP tower, "default" feature strategy (CLS dropped), square crop.

The CLIP image processor resizes the shortest edge to ``S`` (aspect kept) and centre-crops
``crop_h × crop_w``; token (r, c) covers crop pixels ``[c·p, (c+1)·p) × [r·p, (r+1)·p)``, which map
back to the original image by undoing the crop offset and the resize scale.

The CLIP encoder sequence of image ``b`` (batch element) is ``[CLS, patch_0, …, patch_{P-1}]`` with
patches row-major, ``T = P + 1`` tokens at positions ``[b·T, (b+1)·T)``.
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

    @staticmethod
    def patch_boxes(processor, inputs, image_size) -> tuple[int, int, np.ndarray]:
        """``(rows, cols, boxes [rows·cols, 4])`` of the CLIP patch grid, boxes in original pixels."""
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
        return rows, cols, np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)

    def vision_layout(self, model, processor, inputs, image_size):
        rows, cols, boxes = self.patch_boxes(processor, inputs, image_size)
        spans = token_spans(inputs["input_ids"][0], model.config.image_token_id)
        return VisionLayout(spans=spans, grids=np.array([[rows, cols]] * len(spans), dtype=np.int64), token_boxes=np.tile(boxes, (len(spans), 1)))

    def vision_attention_modules(self, model):
        tower = model.model.vision_tower
        encoder = tower.vision_model.encoder if hasattr(tower, "vision_model") else tower.encoder
        return [layer.self_attn for layer in encoder.layers]

    def patch_layout(self, model, processor, inputs, image_size):
        from ..vision import PatchLayout

        rows, cols, boxes = self.patch_boxes(processor, inputs, image_size)
        n_images = int(inputs["pixel_values"].shape[0])
        p = rows * cols
        t = p + 1
        b = np.arange(n_images)
        keep_cls = model.config.vision_feature_select_strategy == "full"
        tokens_per_image = p + 1 if keep_cls else p
        return PatchLayout(
            grids=np.array([[rows, cols]] * n_images, dtype=np.int64),
            seq_index=(b[:, None] * t + 1 + np.arange(p)).ravel(),
            image_seq=np.stack([b * t, (b + 1) * t], axis=1),
            cls_seq=b * t,
            patch_token=(b[:, None] * tokens_per_image + int(keep_cls) + np.arange(p)).ravel(),
            patch_boxes=np.tile(boxes, (n_images, 1)),
        )
