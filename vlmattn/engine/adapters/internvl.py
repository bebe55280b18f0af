"""InternVL (``internvl``, the ``-hf`` checkpoints): aspect-ratio tiles plus a thumbnail, pixel shuffle.

With tile side ``S`` (``vision_config.image_size``, 448 px), encoder patch ``p`` (14 px) and pixel
shuffle ratio ``r`` (``downsample_ratio``, 0.5), a tile is ``S/p × S/p`` patches and ``g = r·S/p`` tokens
a side (16); each token is a ``p/r`` px block (28 px) of ``1/r × 1/r`` patches.

The image processor (``GotOcr2ImageProcessor`` with ``crop_to_patches``) picks the tile grid
``(cols, rows)`` whose aspect ratio is closest to the image's among those of ``min_patches`` …
``max_patches`` tiles (transformers' ``get_optimal_tiled_canvas``), resizes the image, squashed, to
``cols·S × rows·S`` and cuts it into tiles, row-major; with more than one tile it appends a
**thumbnail**, the image squashed to ``S × S``. Each tile and the thumbnail is a piece of ``g × g``
tokens (kinds ``tile`` and ``thumbnail``). Token ``(m, k)`` of tile ``(ti, tj)`` covers resized pixels
``[tj·S + k·p/r, …+p/r) × [ti·S + m·p/r, …+p/r)``, scaled by ``W/(cols·S)`` and ``H/(rows·S)``; of the
thumbnail, ``[k·p/r, …) × [m·p/r, …)`` scaled by ``W/S`` and ``H/S``.

The prompt holds an image as ``<img>``, the pieces' tokens piece after piece, ``</img>``: the wrappers
are markers ``image_start`` and ``image_end``. Only ``vision_feature_select_strategy: "default"`` (CLS
dropped) runs: the model reshapes the features into a square grid, which a CLS token does not fit.

The encoder (InternViT) runs each tile and the thumbnail as its own sequence ``[CLS, patch_0, …]``
(patches raster); patch ``(i, j)`` of a piece feeds that piece's token ``(i·r, j·r)`` (integer part).
"""

from __future__ import annotations

import numpy as np

from .base import Adapter, VisionLayout, image_sizes, token_spans


def _size_of(size) -> int:
    return int(size[0]) if isinstance(size, (list, tuple)) else int(size)


def tile_grid(width: int, height: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """``(cols, rows)`` of the tiles InternVL's processor cuts a ``width × height`` image into."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    return get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)


class InternVLAdapter(Adapter):
    family = "internvl"
    model_types = ("internvl",)

    @staticmethod
    def geometry(model, processor) -> dict:
        """Tile ``S``, patch ``p``, tokens a tile side ``g``, block ``b = 1/r`` patches a token side, the
        processor's tile limits and thumbnail switch; checked against the model config."""
        vc = model.config.vision_config
        tile, patch = _size_of(vc.image_size), _size_of(vc.patch_size)
        ip = processor.image_processor
        size = ip.size
        tile_h = size["height"] if isinstance(size, dict) else size.height
        if int(tile_h) != tile:
            raise ValueError(f"processor tile {tile_h} px differs from the vision config's {tile} px")
        if model.config.vision_feature_select_strategy != "default":
            raise ValueError(f"family internvl: vision_feature_select_strategy "
                             f"{model.config.vision_feature_select_strategy!r} is not supported (the model reshapes "
                             "the features into a square grid, which a CLS token does not fit); use 'default'")
        block = round(1 / model.config.downsample_ratio)
        g = tile // patch // block
        if g * g != processor.image_seq_length:
            raise ValueError(f"processor image_seq_length {processor.image_seq_length} differs from the model's "
                             f"{g}×{g} tokens a tile")
        crop = bool(getattr(ip, "crop_to_patches", False)) and int(ip.max_patches) > 1
        return dict(tile=tile, patch=patch, block=block, g=g, crop=crop, min=int(ip.min_patches),
                    max=int(ip.max_patches), thumbnail=True)

    def pieces(self, model, processor, width: int, height: int) -> list[tuple[str, np.ndarray, tuple]]:
        """The pieces of one image in prompt order: ``(kind, token boxes [g², 4], (ti, tj) or None)``."""
        geo = self.geometry(model, processor)
        s, g, cell = geo["tile"], geo["g"], geo["patch"] * geo["block"]
        cols, rows = tile_grid(width, height, s, geo["min"], geo["max"]) if geo["crop"] else (1, 1)
        m, k = np.divmod(np.arange(g * g), g)

        def boxes(x0, y0, sx, sy):
            b = np.stack([x0 + k * cell, y0 + m * cell, x0 + (k + 1) * cell, y0 + (m + 1) * cell], axis=1)
            b = b * [sx, sy, sx, sy]
            return np.clip(b, 0, [width, height, width, height]).astype(np.float32)

        if not geo["crop"]:  # one tile: the image resized to S × S
            return [("image", boxes(0, 0, width / s, height / s), (0, 0))]
        out = [("tile", boxes(tj * s, ti * s, width / (cols * s), height / (rows * s)), (ti, tj))
               for ti in range(rows) for tj in range(cols)]
        if len(out) > 1:
            out.append(("thumbnail", boxes(0, 0, width / s, height / s), None))
        else:
            out[0] = ("image", *out[0][1:])
        return out

    def vision_layout(self, model, processor, inputs, image_size):
        ids = inputs["input_ids"][0]
        tok = processor.tokenizer
        runs = token_spans(ids, model.config.image_token_id)
        sizes = image_sizes(image_size, len(runs))
        start_id, end_id = tok.convert_tokens_to_ids(processor.start_image_token), tok.convert_tokens_to_ids(
            processor.end_image_token)
        ids = ids.cpu().numpy()
        spans, grids, boxes, kinds, piece_image, markers, marker_kinds = [], [], [], [], [], [], []
        g = self.geometry(model, processor)["g"]
        for i, ((start, end), (width, height)) in enumerate(zip(runs, sizes, strict=True)):
            pieces = self.pieces(model, processor, width, height)
            if end - start != len(pieces) * g * g:
                raise ValueError(f"image {i}: the processor lays out {end - start} image tokens, the tiling "
                                 f"{len(pieces)} pieces × {g}×{g} = {len(pieces) * g * g}")
            if ids[start - 1] != start_id or end >= len(ids) or ids[end] != end_id:
                raise ValueError(f"image {i}: its tokens are not wrapped in {processor.start_image_token} … "
                                 f"{processor.end_image_token}")
            spans.append([start, end])
            for kind, b, _ in pieces:
                grids.append([g, g])
                boxes.append(b)
                kinds.append(kind)
                piece_image.append(i)
            markers += [start - 1, end]
            marker_kinds += ["image_start", "image_end"]
        return VisionLayout(spans=np.asarray(spans, np.int64), grids=np.asarray(grids, np.int64),
                            token_boxes=np.concatenate(boxes), piece_image=np.asarray(piece_image, np.int64),
                            piece_kinds=kinds, marker_positions=np.asarray(markers, np.int64),
                            marker_kinds=marker_kinds)

    def vision_attention_modules(self, model):
        return [layer.attention for layer in model.model.vision_tower.encoder.layer]

    def patch_layout(self, model, processor, inputs, image_size):
        """Each piece its own encoder sequence ``[CLS, patches…]``, pieces in prompt order."""
        from ..vision import PatchLayout

        geo = self.geometry(model, processor)
        s, p, b, g = geo["tile"], geo["patch"], geo["block"], geo["g"]
        n_side = s // p
        n_images = len(token_spans(inputs["input_ids"][0], model.config.image_token_id))
        grids, seq, image_seq, cls_seq, tokens, boxes = [], [], [], [], [], []
        offset = token_offset = 0
        i, j = np.divmod(np.arange(n_side * n_side), n_side)
        for width, height in image_sizes(image_size, n_images):
            cols, rows = tile_grid(width, height, s, geo["min"], geo["max"]) if geo["crop"] else (1, 1)
            for kind, _, at in self.pieces(model, processor, width, height):
                if kind == "thumbnail" or not geo["crop"]:
                    x0, y0, sx, sy = 0, 0, width / s, height / s
                else:
                    x0, y0, sx, sy = at[1] * s, at[0] * s, width / (cols * s), height / (rows * s)
                pb = np.stack([x0 + j * p, y0 + i * p, x0 + (j + 1) * p, y0 + (i + 1) * p], axis=1) * [sx, sy, sx, sy]
                boxes.append(np.clip(pb, 0, [width, height, width, height]).astype(np.float32))
                grids.append([n_side, n_side])
                image_seq.append([offset, offset + n_side * n_side + 1])
                cls_seq.append(offset)
                seq.append(offset + 1 + np.arange(n_side * n_side))
                tokens.append(token_offset + (i // b) * g + j // b)
                offset += n_side * n_side + 1
                token_offset += g * g
        return PatchLayout(grids=np.asarray(grids, np.int64), seq_index=np.concatenate(seq),
                           image_seq=np.asarray(image_seq, np.int64), cls_seq=np.asarray(cls_seq, np.int64),
                           patch_token=np.concatenate(tokens).astype(np.int64), patch_boxes=np.concatenate(boxes))
