"""Idefics3 (``idefics3``) and SmolVLM (``smolvlm``): row × col tiles plus a global image, pixel shuffle.

With tile side ``T`` (the image processor's ``max_image_size["longest_edge"]``, 364 px in Idefics3, 512 in
SmolVLM; the vision config's ``image_size``), patch ``p`` and pixel-shuffle scale ``s``
(``scale_factor``: 2 in Idefics3, 3 or 4 in SmolVLM), a tile is ``T/p × T/p`` patches and ``g = T/(p·s)``
tokens a side; each token is a ``p·s`` px block of ``s × s`` patches.

The image processor resizes the image (aspect kept) so that its longest edge is ``size["longest_edge"]``
(its own ``_resize_output_size_rescale_to_max_len``, then at most 4096 px), then — with
``do_image_splitting`` — to ``(h', w')``, multiples of ``T`` (long side rounded up, short side from the
aspect ratio, rounded up). An image larger than one tile is cut into ``rows × cols = h'/T × w'/T``
tiles, row-major, followed by a **global** image, the whole ``h' × w'`` image squashed to ``T × T``; a
smaller one is a single ``T × T`` image. Without splitting, the image is squashed to ``T × T``. Token
``(m, k)`` of tile ``(r, c)`` covers resized pixels ``[c·T + k·p·s, …+p·s) × [r·T + m·p·s, …+p·s)``,
scaled by ``W/w'`` and ``H/h'``; of the global image, ``[k·p·s, …) × [m·p·s, …)`` scaled by ``W/T`` and
``H/T``.

The prompt: per tile ``<fake_token_around_image><row_r_col_c>`` then its ``g²`` ``<image>`` tokens, a
``\\n`` after each row of tiles, then ``\\n<fake_token_around_image><global-img>``, the global image's
tokens and ``<fake_token_around_image>`` (a single image: only the last part). The
``<fake_token_around_image>`` and ``<row_r_col_c>`` tokens are markers ``tile_marker``, ``<global-img>``
``global_marker``; the ``\\n`` tokens stay text.

The vision transformer (SigLIP-type, no CLS) runs each tile and the global image as its own sequence of
``(T/p)²`` patches (raster); patch ``(i, j)`` feeds its piece's token ``(i // s, j // s)``.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from .base import Adapter, VisionLayout, image_sizes, token_spans


def _edge(size) -> int:
    return int(size["longest_edge"] if isinstance(size, dict) else size.longest_edge)


class Idefics3Adapter(Adapter):
    family = "idefics3"
    model_types = ("idefics3",)
    blank_pixel_value = 1e-6  # an image of exact zeros is batch padding to the model

    def batch_images(self, images):
        return [[im] for im in images]  # one list of images a prompt

    @staticmethod
    def geometry(model, processor) -> dict:
        vc = model.config.vision_config
        ip = processor.image_processor
        tile, patch, scale = _edge(ip.max_image_size), int(vc.patch_size), int(model.config.scale_factor)
        if tile != int(vc.image_size):
            raise ValueError(f"processor max_image_size {tile} px differs from the vision config's image_size "
                             f"{vc.image_size} px")
        g = tile // patch // scale
        if g * g != processor.image_seq_len:
            raise ValueError(f"processor image_seq_len {processor.image_seq_len} differs from the model's {g}×{g} "
                             "tokens a tile")
        return dict(tile=tile, patch=patch, scale=scale, g=g, split=bool(ip.do_image_splitting),
                    resize=bool(ip.do_resize), longest=_edge(ip.size))

    def tiling(self, model, processor, width: int, height: int) -> tuple[int, int, int, int]:
        """``(rows, cols, h', w')``: the tiles of a ``width × height`` image (0, 0 for a single image) and
        the size it is cut from (module docstring)."""
        geo = self.geometry(model, processor)
        t = geo["tile"]
        if not geo["split"]:
            return 0, 0, t, t
        module = sys.modules[type(processor.image_processor).__module__]  # the processor's own resize rules
        h, w = height, width
        if geo["resize"]:
            h, w = module._resize_output_size_rescale_to_max_len(h, w, max_len=geo["longest"])
            h, w = module._resize_output_size_scale_below_upper_bound(h, w, max_len=module.MAX_IMAGE_SIZE)
        aspect = w / h
        if w >= h:
            w = math.ceil(w / t) * t
            h = math.ceil(int(w / aspect) / t) * t
        else:
            h = math.ceil(h / t) * t
            w = math.ceil(int(h * aspect) / t) * t
        if h > t or w > t:
            return h // t, w // t, h, w
        return 0, 0, h, w

    def pieces(self, model, processor, width: int, height: int):
        """The pieces of one image in prompt order: ``(kind, origin (x0, y0) in resized pixels, scale (sx,
        sy) to original pixels)``."""
        t = self.geometry(model, processor)["tile"]
        rows, cols, h, w = self.tiling(model, processor, width, height)
        if not rows:
            return [("image", (0, 0), (width / t, height / t))]
        tiles = [("tile", (c * t, r * t), (width / w, height / h)) for r in range(rows) for c in range(cols)]
        return tiles + [("global", (0, 0), (width / t, height / t))]

    @staticmethod
    def _boxes(origin, scale, cell: float, n: int, width: int, height: int) -> np.ndarray:
        m, k = np.divmod(np.arange(n * n), n)
        x0, y0 = origin
        sx, sy = scale
        b = np.stack([x0 + k * cell, y0 + m * cell, x0 + (k + 1) * cell, y0 + (m + 1) * cell], axis=1)
        b = b * [sx, sy, sx, sy]
        return np.clip(b, 0, [width, height, width, height]).astype(np.float32)

    def vision_layout(self, model, processor, inputs, image_size):
        geo = self.geometry(model, processor)
        g, cell = geo["g"], geo["patch"] * geo["scale"]
        ids = inputs["input_ids"][0]
        runs = token_spans(ids, model.config.image_token_id)
        ids = ids.cpu().numpy()
        tok = processor.tokenizer
        fake = tok.convert_tokens_to_ids(processor.fake_image_token)
        glob = tok.convert_tokens_to_ids(getattr(processor, "global_image_tag", None) or processor.global_image_token)
        row_col = {tok.convert_tokens_to_ids(f"<row_{i + 1}_col_{j + 1}>") for i in range(6) for j in range(6)}
        sizes = image_sizes(image_size, 1)
        pieces = [(i, kind, origin, scale, size) for i, size in enumerate(sizes)
                  for kind, origin, scale in self.pieces(model, processor, *size)]
        if len(pieces) != len(runs):
            raise ValueError(f"{len(runs)} runs of image tokens for {len(pieces)} pieces (tiles and global images)")
        boxes, kinds, piece_image, markers, marker_kinds = [], [], [], [], []
        for (start, end), (i, kind, origin, scale, (width, height)) in zip(runs, pieces, strict=True):
            if end - start != g * g:
                raise ValueError(f"image {i}: a piece of {end - start} image tokens, not {g}×{g}")
            boxes.append(self._boxes(origin, scale, cell, g, width, height))
            kinds.append(kind)
            piece_image.append(i)
            head = [start - 2, start - 1]  # <fake_token_around_image> and <row_r_col_c> / <global-img>
            if ids[head[0]] != fake or ids[head[1]] not in ({glob} if kind != "tile" else row_col):
                raise ValueError(f"image {i}: a {kind} not introduced by {processor.fake_image_token} and its tag")
            markers += head
            marker_kinds += ["tile_marker", "global_marker" if kind != "tile" else "tile_marker"]
            if kind != "tile":
                if end >= len(ids) or ids[end] != fake:
                    raise ValueError(f"image {i}: its global image is not closed by {processor.fake_image_token}")
                markers.append(end)
                marker_kinds.append("tile_marker")
        return VisionLayout(spans=runs, grids=np.full((len(runs), 2), g, np.int64),
                            token_boxes=np.concatenate(boxes), piece_image=np.asarray(piece_image, np.int64),
                            piece_kinds=kinds, marker_positions=np.asarray(markers, np.int64),
                            marker_kinds=marker_kinds)

    def vision_attention_modules(self, model):
        return [layer.self_attn for layer in model.model.vision_model.encoder.layers]

    def patch_layout(self, model, processor, inputs, image_size):
        from ..vision import PatchLayout

        geo = self.geometry(model, processor)
        p, s, g, t = geo["patch"], geo["scale"], geo["g"], geo["tile"]
        n = t // p
        i, j = np.divmod(np.arange(n * n), n)
        grids, seq, image_seq, tokens, boxes = [], [], [], [], []
        offset = token_offset = 0
        for width, height in image_sizes(image_size, 1):
            for _, origin, scale in self.pieces(model, processor, width, height):
                grids.append([n, n])
                image_seq.append([offset, offset + n * n])
                seq.append(offset + np.arange(n * n))
                tokens.append(token_offset + (i // s) * g + j // s)
                boxes.append(self._boxes(origin, scale, p, n, width, height))
                offset += n * n
                token_offset += g * g
        return PatchLayout(grids=np.asarray(grids, np.int64), seq_index=np.concatenate(seq),
                           image_seq=np.asarray(image_seq, np.int64), cls_seq=np.full(len(grids), -1, np.int64),
                           patch_token=np.concatenate(tokens).astype(np.int64), patch_boxes=np.concatenate(boxes))


class SmolVLMAdapter(Idefics3Adapter):
    family = "smolvlm"
    model_types = ("smolvlm",)

    def chat_prompt(self, processor, question: str, answer: str | None = None) -> str:
        """The processor's chat template rendered by its tokenizer (SmolVLM's processor reads video
        settings in ``apply_chat_template``, which an image-only processor does not have)."""
        return processor.tokenizer.apply_chat_template(
            self.messages(question, answer), chat_template=processor.chat_template, tokenize=False,
            add_generation_prompt=answer is None)
