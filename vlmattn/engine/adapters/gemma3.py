"""Gemma 3 (``gemma3``): SigLIP pooled to a square token grid, pan-and-scan crops, bidirectional prefill.

With image side ``S`` (``vision_config.image_size``, 896 px), patch ``p`` (14 px) and ``g × g`` tokens
an image (``mm_tokens_per_image`` = 256: ``g`` = 16), the projector average-pools each ``k × k`` block
of the ``S/p × S/p`` SigLIP patches (``k = S/(p·g)`` = 4) into one token: a token is a ``k·p`` px block
(56 px) of the resized image.

The image processor resizes the image, squashed, to ``S × S``: the **image** piece. With
pan-and-scan on (``do_pan_and_scan``, passed to every processor call from the image processor's
settings, else the processor's defaults), an image whose long side is at least
``pan_and_scan_min_ratio_to_activate`` times its short side is also cut along its long side into
2 … ``pan_and_scan_max_num_crops`` **crops** of at least ``pan_and_scan_min_crop_size`` px, each
squashed to ``S × S``: one piece each (kind ``crop``), the regions found by running the processor's
own ``pan_and_scan`` on an array of pixel coordinates. Token ``(r, c)`` of a piece over the region
``[x0, x1) × [y0, y1)`` covers
``[x0 + c·(x1−x0)/g, x0 + (c+1)·(x1−x0)/g) × [y0 + r·(y1−y0)/g, …)``.

The prompt holds each piece as ``<start_of_image>``, ``g²`` image tokens, ``<end_of_image>`` (markers
``image_start`` and ``image_end``); with crops, text ("Here is the original image … and here are some
crops …") runs between the pieces. In prefill the image tokens of one piece attend to each other in
both directions (``token_type_ids``), the rest causally; local layers see a sliding window.

SigLIP has no CLS token: the encoder runs each piece as one sequence of its ``(S/p)²`` patches
(raster); patch ``(i, j)`` feeds the piece's token ``(i // k, j // k)``.
"""

from __future__ import annotations

import numpy as np

from .base import Adapter, VisionLayout, image_sizes, token_spans, tower_layers

PAN_AND_SCAN = ("do_pan_and_scan", "pan_and_scan_min_crop_size", "pan_and_scan_max_num_crops",
                "pan_and_scan_min_ratio_to_activate")


class Gemma3Adapter(Adapter):
    family = "gemma3"
    model_types = ("gemma3",)
    causal_prefill = False

    def batch_images(self, images):
        return [[im] for im in images]

    def processor_kwargs(self, processor) -> dict:
        """The image processor's pan-and-scan settings (the processor's own defaults, pan-and-scan off and
        256 px crops, otherwise override them), those it sets."""
        ip = processor.image_processor
        return {k: getattr(ip, k) for k in PAN_AND_SCAN if getattr(ip, k, None) is not None}

    @staticmethod
    def geometry(model) -> dict:
        vc = model.config.vision_config
        side, patch = int(vc.image_size), int(vc.patch_size)
        g = int(round(model.config.mm_tokens_per_image ** 0.5))
        return dict(side=side, patch=patch, g=g, k=side // patch // g, n=side // patch)

    def regions(self, processor, width: int, height: int) -> list[tuple[str, tuple[float, float, float, float]]]:
        """The pieces of one image: ``(kind, (x0, y0, x1, y1))`` in original pixels, the image then its crops
        (pan-and-scan, when on)."""
        from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

        settings = {**Gemma3Processor.images_kwargs, **self.processor_kwargs(processor)}
        out = [("image", (0.0, 0.0, float(width), float(height)))]
        if not settings["do_pan_and_scan"]:
            return out
        args = (settings["pan_and_scan_min_crop_size"], settings["pan_and_scan_max_num_crops"],
                settings["pan_and_scan_min_ratio_to_activate"])
        # the processor's own crops of two [1, H, W] coordinate images, as zero-stride views (no H·W array)
        ys = np.broadcast_to(np.arange(height)[None, :, None], (1, height, width))
        xs = np.broadcast_to(np.arange(width)[None, None, :], (1, height, width))
        pan = processor.image_processor.pan_and_scan
        for cy, cx in zip(pan(ys, *args), pan(xs, *args), strict=True):  # [1, h, w] each
            out.append(("crop", (float(cx[0, 0, 0]), float(cy[0, 0, 0]), float(cx[0, 0, -1] + 1),
                                 float(cy[0, -1, 0] + 1))))
        return out

    @staticmethod
    def _grid_boxes(region, n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = region
        w, h = (x1 - x0) / n, (y1 - y0) / n
        b = np.stack([x0 + cols * w, y0 + rows * h, x0 + (cols + 1) * w, y0 + (rows + 1) * h], axis=1)
        return b.astype(np.float32)

    def vision_layout(self, model, processor, inputs, image_size):
        geo = self.geometry(model)
        g = geo["g"]
        ids = inputs["input_ids"][0]
        runs = token_spans(ids, model.config.image_token_id)
        ids = ids.cpu().numpy()
        boi, eoi = int(model.config.boi_token_index), int(model.config.eoi_token_index)
        sizes = image_sizes(image_size, 1)  # one size, or one per image
        pieces = [(i, kind, region, size) for i, size in enumerate(sizes)
                  for kind, region in self.regions(processor, *size)]
        if len(pieces) != len(runs):
            raise ValueError(f"{len(runs)} runs of image tokens for {len(pieces)} pieces (images and crops)")
        r, c = np.divmod(np.arange(g * g), g)
        spans, boxes, markers, kinds, piece_image = [], [], [], [], []
        for (start, end), (i, kind, region, _) in zip(runs, pieces, strict=True):
            if end - start != g * g or ids[start - 1] != boi or end >= len(ids) or ids[end] != eoi:
                raise ValueError(f"image {i}: a piece of {end - start} image tokens, not {g}×{g} between "
                                 "<start_of_image> and <end_of_image>")
            spans.append([start, end])
            boxes.append(self._grid_boxes(region, g, r, c))
            markers += [start - 1, end]
            kinds.append(kind)
            piece_image.append(i)
        return VisionLayout(spans=np.asarray(spans, np.int64), grids=np.full((len(spans), 2), g, np.int64),
                            token_boxes=np.concatenate(boxes), piece_image=np.asarray(piece_image, np.int64),
                            piece_kinds=kinds, marker_positions=np.asarray(markers, np.int64),
                            marker_kinds=["image_start", "image_end"] * len(spans))

    def vision_attention_modules(self, model):
        return [layer.self_attn for layer in tower_layers(model.model.vision_tower)]

    def patch_layout(self, model, processor, inputs, image_size):
        from ..vision import PatchLayout

        geo = self.geometry(model)
        n, k, g = geo["n"], geo["k"], geo["g"]
        i, j = np.divmod(np.arange(n * n), n)
        regions = [region for size in image_sizes(image_size, 1) for _, region in self.regions(processor, *size)]
        grids, seq, image_seq, tokens, boxes = [], [], [], [], []
        offset = token_offset = 0
        for region in regions:
            grids.append([n, n])
            image_seq.append([offset, offset + n * n])
            seq.append(offset + np.arange(n * n))
            tokens.append(token_offset + (i // k) * g + j // k)
            boxes.append(self._grid_boxes(region, n, i, j))
            offset += n * n
            token_offset += g * g
        return PatchLayout(grids=np.asarray(grids, np.int64), seq_index=np.concatenate(seq),
                           image_seq=np.asarray(image_seq, np.int64), cls_seq=np.full(len(grids), -1, np.int64),
                           patch_token=np.concatenate(tokens).astype(np.int64), patch_boxes=np.concatenate(boxes))
