"""LLaVA-1.5 (``llava``): CLIP tower, square crop; feature strategy "default" (CLS dropped) or "full".

The CLIP image processor resizes the shortest edge to ``S`` (aspect kept) and centre-crops
``crop_h × crop_w``; token (r, c) covers crop pixels ``[c·p, (c+1)·p) × [r·p, (r+1)·p)``, which map
back to the original image by undoing the crop offset and the resize scale.

The CLIP encoder sequence of image ``b`` (batch element) is ``[CLS, patch_0, …, patch_{P-1}]`` with
patches row-major, ``T = P + 1`` tokens at positions ``[b·T, (b+1)·T)``.

The LLM receives each image as a run of ``<image>`` tokens: the ``P`` patches row-major with
``vision_feature_select_strategy = "default"``, and ``[CLS, patch_0, …, patch_{P-1}]`` with ``"full"``.
The CLS token has no pixel box, so it is not a vision token of the layout: the image's span covers
its ``P`` patch tokens (grid and boxes as with ``"default"``) and ``cls_positions`` holds the CLS
token's prompt position, the one just before the span.
"""

from __future__ import annotations

import numpy as np

from .base import Adapter, VisionLayout, token_spans, tower_layers


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
            [(left + c * patch) * sx, (top + r * patch) * sy,
             (left + (c + 1) * patch) * sx, (top + (r + 1) * patch) * sy],
            axis=1,
        )
        return rows, cols, np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)

    @staticmethod
    def keeps_cls(model) -> bool:
        """True when the model feeds the CLS token to the LLM (``vision_feature_select_strategy="full"``)."""
        strategy = model.config.vision_feature_select_strategy
        if strategy not in ("default", "full"):
            raise ValueError(f"unknown vision_feature_select_strategy {strategy!r} (known: 'default', 'full')")
        return strategy == "full"

    def vision_layout(self, model, processor, inputs, image_size):
        rows, cols, boxes = self.patch_boxes(processor, inputs, image_size)
        runs = token_spans(inputs["input_ids"][0], model.config.image_token_id)
        keep_cls = self.keeps_cls(model)
        per_image = rows * cols + int(keep_cls)
        lengths = sorted(set((runs[:, 1] - runs[:, 0]).tolist()))
        if lengths and lengths != [per_image]:
            feeds = f"{rows}×{cols} patches" + (" + CLS" if keep_cls else "")
            raise ValueError(
                f"the processor lays out {'/'.join(map(str, lengths))} image tokens per image, but "
                f"vision_feature_select_strategy {model.config.vision_feature_select_strategy!r} feeds {per_image} "
                f"({feeds}); processor and model config disagree"
            )
        spans = runs + np.array([int(keep_cls), 0], np.int64)
        return VisionLayout(
            spans=spans,
            grids=np.array([[rows, cols]] * len(spans), dtype=np.int64),
            token_boxes=np.tile(boxes, (len(spans), 1)),
            cls_positions=runs[:, 0].copy() if keep_cls else np.full(len(runs), -1, np.int64),
        )

    def vision_attention_modules(self, model):
        return [layer.self_attn for layer in tower_layers(model.model.vision_tower)]

    def patch_layout(self, model, processor, inputs, image_size):
        from ..vision import PatchLayout

        rows, cols, boxes = self.patch_boxes(processor, inputs, image_size)
        n_images = int(inputs["pixel_values"].shape[0])
        p = rows * cols
        t = p + 1
        b = np.arange(n_images)
        return PatchLayout(
            grids=np.array([[rows, cols]] * n_images, dtype=np.int64),
            seq_index=(b[:, None] * t + 1 + np.arange(p)).ravel(),
            image_seq=np.stack([b * t, (b + 1) * t], axis=1),
            cls_seq=b * t,
            patch_token=(b[:, None] * p + np.arange(p)).ravel(),  # vision tokens exclude the CLS token
            patch_boxes=np.tile(boxes, (n_images, 1)),
        )
