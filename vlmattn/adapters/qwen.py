"""Qwen2-VL (``qwen2_vl``), Qwen2.5-VL (``qwen2_5_vl``) and Qwen3-VL (``qwen3_vl``).

The image processor resizes each image with ``smart_resize`` to ``(H', W')``, multiples of
``p·m`` (patch size ``p``, merge size ``m``), and cuts it into a ``(gh, gw) = (H'/p, W'/p)`` patch
grid, reported per image as ``image_grid_thw = (1, gh, gw)``. The vision tower merges each ``m×m``
block of patches into one LLM token, so image ``i`` contributes ``(gh/m)·(gw/m)`` tokens running
row-major over the merged grid. Token ``(r, c)`` covers resized pixels
``[c·p·m, (c+1)·p·m) × [r·p·m, (r+1)·p·m)``, i.e. original pixels scaled by ``(W/W', H/H')``.

``pixel_values`` rows are in block-major order: patch ``k`` belongs to token ``k // m²`` and sits at
``(k mod m²) // m, (k mod m²) mod m`` inside that token's block.
"""

from __future__ import annotations

import numpy as np

from .base import Adapter, VisionLayout, token_spans


def _sizes(image_size, n: int) -> list[tuple[int, int]]:
    """One ``(width, height)`` per image from a single size or a list of sizes."""
    if len(image_size) == 2 and np.isscalar(image_size[0]):
        return [tuple(int(v) for v in image_size)] * n
    return [tuple(int(v) for v in s) for s in image_size]


def merged_grid_boxes(grid_h: int, grid_w: int, patch: int, merge: int, width: int, height: int) -> np.ndarray:
    """Pixel boxes ``[(gh/m)·(gw/m), 4]`` of the merged tokens of one image, row-major, in original pixels."""
    rows, cols = grid_h // merge, grid_w // merge
    cell = patch * merge
    sx, sy = width / (grid_w * patch), height / (grid_h * patch)
    r, c = np.divmod(np.arange(rows * cols), cols)
    boxes = np.stack([c * cell * sx, r * cell * sy, (c + 1) * cell * sx, (r + 1) * cell * sy], axis=1)
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)


def block_major_to_raster(grid_h: int, grid_w: int, merge: int) -> np.ndarray:
    """``[gh·gw]``: for each patch in raster (row-major) order, its index in block-major order."""
    r, c = np.divmod(np.arange(grid_h * grid_w), grid_w)
    block = (r // merge) * (grid_w // merge) + (c // merge)
    return block * merge * merge + (r % merge) * merge + (c % merge)


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)

    @staticmethod
    def patch_geometry(model, processor) -> tuple[int, int]:
        """``(patch, merge)`` from the image processor, checked against the vision config."""
        ip = processor.image_processor
        patch, merge = int(ip.patch_size), int(ip.merge_size)
        vc = model.config.vision_config
        if (int(vc.patch_size), int(vc.spatial_merge_size)) != (patch, merge):
            raise ValueError(
                f"processor patch/merge {patch}/{merge} differ from the vision config's "
                f"{vc.patch_size}/{vc.spatial_merge_size}"
            )
        return patch, merge

    def vision_layout(self, model, processor, inputs, image_size):
        patch, merge = self.patch_geometry(model, processor)
        grid_thw = inputs["image_grid_thw"].cpu().numpy().astype(np.int64)
        if (grid_thw[:, 0] != 1).any():
            raise ValueError(f"expected still images (t = 1), got image_grid_thw {grid_thw.tolist()}")
        sizes = _sizes(image_size, len(grid_thw))
        spans = token_spans(inputs["input_ids"][0], model.config.image_token_id)
        if len(spans) != len(grid_thw):
            raise ValueError(f"{len(spans)} runs of image tokens for {len(grid_thw)} images")
        grids = grid_thw[:, 1:] // merge
        boxes = [merged_grid_boxes(h, w, patch, merge, *sz) for (_, h, w), sz in zip(grid_thw, sizes)]
        return VisionLayout(spans=spans, grids=grids, token_boxes=np.concatenate(boxes))


class Qwen25VLAdapter(Qwen2VLAdapter):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
