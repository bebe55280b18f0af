"""LLaVA-NeXT (``llava_next``): a base grid and an unpadded high-resolution grid per image ("anyres").

With tile side ``S`` (``vision_config.image_size``, 336 px in the checkpoints), encoder patch ``p``
(14 px) and ``g = S / p`` tokens a tile side (24):

* **base** piece: the image resized (squashed) to ``S × S``, one ``g × g`` grid; token ``(r, c)``
  covers original pixels ``[c·W/g, (c+1)·W/g) × [r·H/g, (r+1)·H/g)``.
* **highres** piece: the image resized, aspect kept, to fit the best ``image_grid_pinpoints``
  resolution ``(h*, w*)`` (transformers' ``select_best_resolution``; new size ``(h', w')`` by
  ``get_patch_output_size``), pasted centred on an ``h* × w*`` canvas at ``(⌊(w*−w')/2⌋, ⌊(h*−h')/2⌋)``
  and cut into ``(h*/S) × (w*/S)`` tiles of ``S`` px, row-major. Their ``g × g`` features form a
  ``(h*/p) × (w*/p)`` feature grid, from which the model removes the padding in feature units
  (``unpad_image``: ``⌊(rows − n)/2⌋`` rows, or columns, off each side, with
  ``n = int(round(H·cols/W, 7))`` rows, or ``int(round(W·rows/H, 7))`` columns). Token ``(r, c)`` of the
  unpadded grid is feature ``(r + top, c + left)``: canvas pixels ``[(c+left)·p, …+p) × [(r+top)·p, …+p)``,
  minus the paste offset, scaled by ``W/w'`` and ``H/h'``, clipped to the image. The feature rounding
  may leave a strip of the image, less than one token wide, that no high-resolution token sees (the
  base grid does).
* after each high-resolution row, one ``image_newline`` token (a learned vector, no box): marker kind
  ``newline``.

The prompt holds each image as one run of ``<image>`` tokens: the base grid's ``g²`` tokens, then the
high-resolution rows, each followed by its newline. ``vision_feature_select_strategy: "full"`` cannot
run (transformers packs the tiles' features into a ``g × g`` grid, which a CLS token per tile does not
fit), so the adapter refuses it.

The CLIP encoder runs every tile of every image as its own sequence ``[CLS, patch_0, …]``: the base
tile first, then the high-resolution tiles row-major. A tile's patch feeds the token of its feature
position; patches in the removed padding feed none (``patch_token = -1``).
"""

from __future__ import annotations

import numpy as np

from .base import Adapter, VisionLayout, token_spans, tower_layers


def _pinpoints(model, processor) -> list[list[int]]:
    pinpoints = model.config.image_grid_pinpoints
    if [list(p) for p in processor.image_processor.image_grid_pinpoints] != [list(p) for p in pinpoints]:
        raise ValueError(f"processor image_grid_pinpoints {processor.image_processor.image_grid_pinpoints} differ "
                         f"from the model's {pinpoints}")
    return [list(p) for p in pinpoints]


def anyres_geometry(width: int, height: int, tile: int, patch: int, pinpoints) -> dict:
    """LLaVA-NeXT's high-resolution layout of a ``width × height`` image (see the module docstring):
    best resolution ``(best_h, best_w)``, resized size ``(new_h, new_w)``, paste offset
    ``(paste_x, paste_y)``, tiles ``(tiles_h, tiles_w)``, feature grid ``(rows, cols)`` and the
    unpadded grid's first feature ``(top, left)`` and size ``(kept_rows, kept_cols)``."""
    import math

    from transformers.image_processing_utils import select_best_resolution

    best_h, best_w = select_best_resolution((height, width), pinpoints)
    # get_patch_output_size: fit inside (best_h, best_w), aspect kept, rounded up
    scale_w, scale_h = best_w / width, best_h / height
    if scale_w < scale_h:
        new_w, new_h = best_w, min(math.ceil(height * scale_w), best_h)
    else:
        new_h, new_w = best_h, min(math.ceil(width * scale_h), best_w)
    paste_x, paste_y = (best_w - new_w) // 2, (best_h - new_h) // 2
    g = tile // patch
    tiles_h, tiles_w = best_h // tile, best_w // tile
    rows, cols = tiles_h * g, tiles_w * g
    top = left = 0
    kept_rows, kept_cols = rows, cols
    if width / height > cols / rows:
        n = int(round(height * (cols / width), 7))
        top = (rows - n) // 2
        kept_rows = rows - 2 * top
    else:
        n = int(round(width * (rows / height), 7))
        left = (cols - n) // 2
        kept_cols = cols - 2 * left
    return dict(best_h=best_h, best_w=best_w, new_h=new_h, new_w=new_w, paste_x=paste_x, paste_y=paste_y,
                tiles_h=tiles_h, tiles_w=tiles_w, rows=rows, cols=cols, top=top, left=left,
                kept_rows=kept_rows, kept_cols=kept_cols)


def processed_sizes(inputs) -> list[tuple[int, int]]:
    """``(width, height)`` of each image, from the processor's ``image_sizes`` ``[I, 2]`` (height, width)."""
    return [(int(w), int(h)) for h, w in inputs["image_sizes"].tolist()]


def _boxes(x0, y0, x1, y1, width, height) -> np.ndarray:
    b = np.stack([x0, y0, x1, y1], axis=1).astype(np.float64)
    return np.clip(b, 0, [width, height, width, height]).astype(np.float32)


def base_boxes(width: int, height: int, g: int) -> np.ndarray:
    """``[g², 4]``: the base grid's token boxes (the image squashed to one tile), row-major."""
    r, c = np.divmod(np.arange(g * g), g)
    return _boxes(c * width / g, r * height / g, (c + 1) * width / g, (r + 1) * height / g, width, height)


def highres_boxes(geo: dict, width: int, height: int, patch: int) -> np.ndarray:
    """``[rows · cols, 4]``: the token boxes of the high-resolution grid the model feeds, row-major: the
    unpadded feature grid, or (``fed_rows × fed_cols`` smaller than it: LLaVA-OneVision's downsampling)
    the unpadded region cut into ``fed_rows × fed_cols`` equal cells."""
    rows, cols = geo.get("fed_rows", geo["kept_rows"]), geo.get("fed_cols", geo["kept_cols"])
    r, c = np.divmod(np.arange(rows * cols), cols)
    sx, sy = width / geo["new_w"], height / geo["new_h"]
    cw, ch = patch * geo["kept_cols"] / cols, patch * geo["kept_rows"] / rows  # canvas px a cell
    x0 = (geo["left"] * patch + c * cw - geo["paste_x"]) * sx
    y0 = (geo["top"] * patch + r * ch - geo["paste_y"]) * sy
    return _boxes(x0, y0, x0 + cw * sx, y0 + ch * sy, width, height)


class LlavaNextAdapter(Adapter):
    """LLaVA-NeXT (module docstring)."""

    family = "llava_next"
    model_types = ("llava_next",)
    #: tokens before the patches in each encoder sequence: CLIP's CLS (SigLIP: none)
    encoder_cls = 1

    @staticmethod
    def geometry(model, processor) -> tuple[int, int]:
        """``(tile, patch)``: the tower's image and patch size, checked against the processor."""
        vc = model.config.vision_config
        tile, patch = int(vc.image_size), int(vc.patch_size)
        crop = processor.image_processor.crop_size
        crop_h = crop["height"] if isinstance(crop, dict) else crop.height
        if int(crop_h) != tile or int(processor.patch_size) != patch:
            raise ValueError(f"processor tile {crop_h} px / patch {processor.patch_size} px differ from the vision "
                             f"config's {tile} / {patch}")
        strategy = model.config.vision_feature_select_strategy
        if strategy != "default":
            raise ValueError(f"family llava_next: vision_feature_select_strategy {strategy!r} is not supported "
                             "(the tiles' CLS tokens do not fit transformers' anyres packing); use 'default'")
        return tile, patch

    def resampled(self, model, processor, geo: dict) -> tuple[int, int]:
        """``(rows, cols)`` of the high-resolution grid the model feeds: the unpadded grid (LLaVA-NeXT)."""
        return geo["kept_rows"], geo["kept_cols"]

    def image_pieces(self, model, processor, image_size) -> tuple[int, dict, np.ndarray, np.ndarray]:
        """``(g, geometry, base boxes, high-resolution boxes)`` of one image of ``image_size``; the geometry
        gains ``fed_rows``, ``fed_cols``: the high-resolution grid the model feeds (:meth:`resampled`)."""
        tile, patch = self.geometry(model, processor)
        width, height = (int(v) for v in image_size)
        geo = anyres_geometry(width, height, tile, patch, _pinpoints(model, processor))
        geo["fed_rows"], geo["fed_cols"] = self.resampled(model, processor, geo)
        g = tile // patch
        return g, geo, base_boxes(width, height, g), highres_boxes(geo, width, height, patch)

    def vision_layout(self, model, processor, inputs, image_size):
        sizes = processed_sizes(inputs)
        runs = token_spans(inputs["input_ids"][0], model.config.image_token_id)
        if len(runs) != len(sizes):
            raise ValueError(f"{len(runs)} runs of image tokens for {len(sizes)} images")
        spans, grids, boxes, kinds, piece_image, markers = [], [], [], [], [], []
        for i, ((start, end), size) in enumerate(zip(runs, sizes, strict=True)):
            g, geo, base, high = self.image_pieces(model, processor, size)
            rows, cols = geo["fed_rows"], geo["fed_cols"]
            if end - start != g * g + rows * (cols + 1):
                raise ValueError(f"image {i}: the processor lays out {end - start} image tokens, the anyres layout "
                                 f"{g}×{g} + {rows}×({cols} + newline) = {g * g + rows * (cols + 1)}")
            spans.append([start, start + g * g])
            row0 = start + g * g + np.arange(rows) * (cols + 1)
            spans.extend(np.stack([row0, row0 + cols], axis=1).tolist())
            markers.extend((row0 + cols).tolist())
            grids += [[g, g], [rows, cols]]
            boxes += [base, high]
            kinds += ["base", "highres"]
            piece_image += [i, i]
        return VisionLayout(
            spans=np.asarray(spans, np.int64), grids=np.asarray(grids, np.int64), token_boxes=np.concatenate(boxes),
            piece_image=np.asarray(piece_image, np.int64), piece_kinds=kinds,
            marker_positions=np.asarray(markers, np.int64), marker_kinds=["newline"] * len(markers),
        )

    def vision_attention_modules(self, model):
        return [layer.self_attn for layer in tower_layers(model.model.vision_tower)]

    def patch_layout(self, model, processor, inputs, image_size):
        """Each tile its own encoder sequence ``[CLS, patches…]`` (``g² + 1`` tokens; SigLIP: the patches
        only): per image the base tile, then the high-resolution tiles row-major; images in order."""
        from ..vision import PatchLayout

        _, patch = self.geometry(model, processor)
        sizes = processed_sizes(inputs)
        grids, seq, image_seq, cls_seq, tokens, boxes = [], [], [], [], [], []
        offset = token_offset = 0
        for width, height in sizes:
            g, geo, base, _ = self.image_pieces(model, processor, (width, height))
            n_cls = self.encoder_cls
            n_seq = g * g + n_cls
            local = np.arange(g * g)
            # base tile: patch k feeds base token k
            grids.append([g, g])
            image_seq.append([offset, offset + n_seq])
            cls_seq.append(offset if n_cls else -1)
            seq.append(offset + n_cls + local)
            tokens.append(token_offset + local)
            boxes.append(base)
            offset += n_seq
            r, c = np.divmod(local, g)
            sx, sy = width / geo["new_w"], height / geo["new_h"]
            for ti in range(geo["tiles_h"]):
                for tj in range(geo["tiles_w"]):
                    fr, fc = ti * g + r - geo["top"], tj * g + c - geo["left"]  # in the unpadded grid
                    kept = (fr >= 0) & (fr < geo["kept_rows"]) & (fc >= 0) & (fc < geo["kept_cols"])
                    # the fed token whose cell holds the patch centre (the unpadded token itself unless resampled)
                    tr = ((fr + 0.5) * geo["fed_rows"] // geo["kept_rows"]).astype(np.int64)
                    tc = ((fc + 0.5) * geo["fed_cols"] // geo["kept_cols"]).astype(np.int64)
                    tokens.append(np.where(kept, token_offset + g * g + tr * geo["fed_cols"] + tc, -1))
                    x0 = ((tj * g + c) * patch - geo["paste_x"]) * sx
                    y0 = ((ti * g + r) * patch - geo["paste_y"]) * sy
                    boxes.append(_boxes(x0, y0, x0 + patch * sx, y0 + patch * sy, width, height))
                    grids.append([g, g])
                    image_seq.append([offset, offset + n_seq])
                    cls_seq.append(offset if n_cls else -1)
                    seq.append(offset + n_cls + local)
                    offset += n_seq
            token_offset += g * g + geo["fed_rows"] * geo["fed_cols"]
        return PatchLayout(
            grids=np.asarray(grids, np.int64), seq_index=np.concatenate(seq), image_seq=np.asarray(image_seq, np.int64),
            cls_seq=np.asarray(cls_seq, np.int64), patch_token=np.concatenate(tokens).astype(np.int64),
            patch_boxes=np.concatenate(boxes),
        )


class LlavaOnevisionAdapter(LlavaNextAdapter):
    """LLaVA-OneVision (``llava_onevision``): LLaVA-NeXT's layout with a SigLIP tower (no CLS: the
    ``"full"`` strategy feeds every patch) and ``anyres_max_N`` (``vision_aspect_ratio``, N = 9): when the
    unpadded grid of ``h × w`` features exceeds N tiles' worth by more than 10 %
    (``ratio = √(h·w / (N·g²)) > 1.1``), the model resamples it bilinearly to
    ``⌊h / ratio⌋ × ⌊w / ratio⌋`` tokens before the newlines. A resampled token's box is its cell of the
    unpadded region cut into that grid (the region its bilinear sample stands for; its weights reach up
    to half a cell beyond); each encoder patch is assigned to the token whose cell holds its centre.
    The base image is squashed to one tile (``size``), the high-resolution tiles as in LLaVA-NeXT."""

    family = "llava_onevision"
    model_types = ("llava_onevision",)
    encoder_cls = 0

    @staticmethod
    def geometry(model, processor) -> tuple[int, int]:
        vc = model.config.vision_config
        tile, patch = int(vc.image_size), int(vc.patch_size)
        size = processor.image_processor.size
        side = size["height"] if isinstance(size, dict) else size.height
        if int(side) != tile:
            raise ValueError(f"processor size {side} px differs from the vision config's {tile} px")
        strategy = model.config.vision_feature_select_strategy
        if strategy != "full":
            raise ValueError(f"family llava_onevision: vision_feature_select_strategy {strategy!r} is not supported "
                             "(SigLIP has no CLS token to drop); use 'full'")
        return tile, patch

    def resampled(self, model, processor, geo):
        import math

        aspect = model.config.vision_aspect_ratio
        if not aspect.startswith("anyres_max_"):
            raise ValueError(f"family llava_onevision: vision_aspect_ratio {aspect!r} is not supported (known: "
                             "anyres_max_N)")
        limit = int(aspect.removeprefix("anyres_max_"))
        g = int(model.config.vision_config.image_size) // int(model.config.vision_config.patch_size)
        h, w = geo["kept_rows"], geo["kept_cols"]
        ratio = math.sqrt(h * w / (limit * g**2))
        if ratio > 1.1:
            return int(h // ratio), int(w // ratio)
        return h, w
