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

from .base import Adapter, VisionLayout, image_sizes, token_spans


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
        sizes = image_sizes(image_size, len(grid_thw))
        spans = token_spans(inputs["input_ids"][0], model.config.image_token_id)
        if len(spans) != len(grid_thw):
            raise ValueError(f"{len(spans)} runs of image tokens for {len(grid_thw)} images")
        grids = grid_thw[:, 1:] // merge
        boxes = [merged_grid_boxes(h, w, patch, merge, *sz) for (_, h, w), sz in zip(grid_thw, sizes, strict=True)]
        return VisionLayout(spans=spans, grids=grids, token_boxes=np.concatenate(boxes))

    def vision_attention_modules(self, model):
        return [block.attn for block in model.model.visual.blocks]

    def sequence_of_blocks(self, model, grid_thw) -> np.ndarray | None:
        """Encoder position of each block-major patch index, or None when the order is unchanged."""
        return None

    def patch_layout(self, model, processor, inputs, image_size):
        """Patches raster per image; the encoder runs them block-major (``pixel_values`` order)."""
        from ..vision import PatchLayout

        patch, merge = self.patch_geometry(model, processor)
        grid_thw = inputs["image_grid_thw"].cpu().numpy().astype(np.int64)
        sizes = image_sizes(image_size, len(grid_thw))
        seq, tokens, boxes, image_seq = [], [], [], []
        offset = token_offset = 0
        for (_, gh, gw), (width, height) in zip(grid_thw, sizes, strict=True):
            block = block_major_to_raster(gh, gw, merge)
            seq.append(offset + block)
            tokens.append(token_offset + block // merge**2)
            r, c = np.divmod(np.arange(gh * gw), gw)
            sx, sy = width / (gw * patch), height / (gh * patch)
            boxes.append(np.stack([c * patch * sx, r * patch * sy, (c + 1) * patch * sx, (r + 1) * patch * sy], axis=1))
            image_seq.append([offset, offset + gh * gw])
            offset += gh * gw
            token_offset += gh * gw // merge**2
        seq = np.concatenate(seq)
        remap = self.sequence_of_blocks(model, inputs["image_grid_thw"])
        if remap is not None:
            seq = remap[seq]
        return PatchLayout(
            grids=grid_thw[:, 1:].copy(),
            seq_index=seq,
            image_seq=np.asarray(image_seq, np.int64),
            cls_seq=np.full(len(grid_thw), -1, np.int64),
            patch_token=np.concatenate(tokens),
            patch_boxes=np.concatenate(boxes).astype(np.float32),
        )


class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL permutes the patch sequence window by window before its first block (merged
    tokens grouped into ``window_size``-pixel windows, each token's ``m²`` patches kept together) and
    keeps that order in every block; windowed blocks attend within a window, the
    ``fullatt_block_indexes`` blocks within an image."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)

    def sequence_of_blocks(self, model, grid_thw):
        from transformers.vision_utils import get_vision_window_index

        visual = model.model.visual
        window_index, _ = get_vision_window_index(
            grid_thw, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        unit = visual.spatial_merge_unit
        seq_to_block = (window_index.cpu().numpy()[:, None] * unit + np.arange(unit)).ravel()
        return np.argsort(seq_to_block)


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
