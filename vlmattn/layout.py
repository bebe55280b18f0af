"""Where an image's tokens sit in the prompt and which pixels each one sees: pieces and markers.

An image reaches the language model as one or more **pieces**, each a row-major grid of tokens with a
pixel box per token, plus box-less image tokens (CLS, newline, tile and row/col markers, wrappers the
processor inserts). :class:`VisionLayout` is what a family adapter reports for a prompt; the cache
stores the same arrays under ``/vision`` (``docs/hdf5-schema.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: kinds of box-less image tokens besides CLS (:attr:`VisionLayout.marker_kinds`)
MARKER_KINDS = ("newline", "image_start", "image_end", "tile_marker", "global_marker")
#: kinds of pieces (:attr:`VisionLayout.piece_kinds`)
PIECE_KINDS = ("image", "base", "highres", "tile", "thumbnail", "global", "crop")


@dataclass
class VisionLayout:
    """Where the vision tokens sit and what they see.

    An image is one or more **pieces**, each a row-major grid of tokens with a pixel box per token:
    the single grid of LLaVA-1.5 and Qwen-VL, LLaVA-NeXT's base grid and its high-resolution grid,
    InternVL's tiles and thumbnail, Gemma 3's image and its pan-and-scan crops, Idefics3's tiles and
    global image. The vision tokens ``V`` are the pieces' tokens, piece after piece, each piece
    row-major; they ascend in the prompt (every family lays its pieces out in that order), so their
    positions are the maximal runs ``spans``.

    spans ``[S, 2]``: (start, end) runs of vision-token positions in ``input_ids`` (end exclusive), in
    order; concatenated they give the ``V`` positions (one run per image when nothing interrupts
    its grid; LLaVA-NeXT's newline tokens cut its high-resolution grid into one run per row).
    grids ``[P, 2]``: (rows, cols) of each piece.
    token_boxes ``[V, 4]``: each vision token's pixel box (x0, y0, x1, y1) in the original image of its
    piece.
    cls_positions ``[I]``: position of an image's CLS token (LLaVA's ``"full"`` strategy), -1 if none.
    piece_image ``[P]``: image (0-based) of each piece; default ``arange(P)``, one piece an image.
    piece_kinds ``[P]``: what each piece is (:data:`PIECE_KINDS`); default ``"image"``.
    marker_positions ``[E]``: prompt positions of the other box-less image tokens (newline, tile or
    row/col markers, image wrappers the processor inserts), none by default; ``marker_kinds [E]``
    their kinds (:data:`MARKER_KINDS`). Like CLS they lie outside the spans and are no vision token.
    """

    spans: np.ndarray
    grids: np.ndarray
    token_boxes: np.ndarray
    cls_positions: np.ndarray | None = None
    piece_image: np.ndarray | None = None
    piece_kinds: list[str] | None = None
    marker_positions: np.ndarray | None = None
    marker_kinds: list[str] | None = None

    def __post_init__(self):
        self.spans = np.asarray(self.spans, np.int64).reshape(-1, 2)
        self.grids = np.asarray(self.grids, np.int64).reshape(-1, 2)
        n_pieces = len(self.grids)
        if self.piece_image is None:
            self.piece_image = np.arange(n_pieces, dtype=np.int64)
        self.piece_image = np.asarray(self.piece_image, np.int64)
        if self.piece_kinds is None:
            self.piece_kinds = ["image"] * n_pieces
        self.piece_kinds = list(self.piece_kinds)
        n_images = int(self.piece_image.max()) + 1 if n_pieces else 0
        if self.cls_positions is None:
            self.cls_positions = np.full(n_images, -1, np.int64)
        self.cls_positions = np.asarray(self.cls_positions, np.int64)
        if self.marker_positions is None:
            self.marker_positions = np.zeros(0, np.int64)
        self.marker_positions = np.asarray(self.marker_positions, np.int64)
        if self.marker_kinds is None:
            self.marker_kinds = []
        self.marker_kinds = list(self.marker_kinds)
        check_layout(self.spans, self.grids, len(self.token_boxes), self.cls_positions, self.piece_image,
                     self.piece_kinds, self.marker_positions, self.marker_kinds)

    @property
    def vision_positions(self) -> np.ndarray:
        """``[V]``: prompt position of each vision token (the spans' positions in order)."""
        return span_positions(self.spans)

    @property
    def image_positions(self) -> np.ndarray:
        """``[V + n_cls + E]`` sorted: every prompt position holding an image token (vision tokens,
        CLS and the other box-less image tokens)."""
        return image_positions(self.vision_positions, self.cls_positions, self.marker_positions)


def image_positions(vision_positions: np.ndarray, cls_positions: np.ndarray,
                    marker_positions: np.ndarray) -> np.ndarray:
    """Sorted prompt positions of every image token: the vision tokens, the CLS tokens (``-1``: none) and
    the markers."""
    cls = np.asarray(cls_positions, np.int64)
    boxless = np.concatenate([cls[cls >= 0], np.asarray(marker_positions, np.int64)])
    return np.union1d(np.asarray(vision_positions, np.int64), boxless).astype(np.int64)


def span_positions(spans: np.ndarray) -> np.ndarray:
    """``[V]``: the positions of the runs ``spans [S, 2]`` (start, end exclusive), in order."""
    spans = np.asarray(spans, np.int64).reshape(-1, 2)
    if not len(spans):
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(s, e) for s, e in spans]).astype(np.int64)


def check_layout(spans, grids, n_boxes, cls_positions, piece_image, piece_kinds, marker_positions,
                 marker_kinds) -> None:
    """Raise ValueError (one line) unless the arrays describe one consistent layout (see
    :class:`VisionLayout`)."""
    n = int(sum(e - s for s, e in spans))
    if n != int(sum(r * c for r, c in grids)) or n != n_boxes:
        raise ValueError(f"inconsistent vision layout: {n} tokens in spans, pieces {np.asarray(grids).tolist()}, "
                         f"{n_boxes} token boxes")
    if len(spans) and ((spans[:, 1] <= spans[:, 0]).any() or (spans[1:, 0] < spans[:-1, 1]).any()):
        raise ValueError(f"inconsistent vision layout: spans {spans.tolist()} are not ascending non-empty runs")
    if len(piece_image) != len(grids) or len(piece_kinds) != len(grids):
        raise ValueError(f"inconsistent vision layout: {len(grids)} pieces, {len(piece_image)} piece images, "
                         f"{len(piece_kinds)} piece kinds")
    if len(piece_image) and (piece_image[0] != 0 or (np.diff(piece_image) < 0).any()
                             or (np.diff(piece_image) > 1).any()):
        raise ValueError(f"inconsistent vision layout: piece images {piece_image.tolist()} do not run 0, 1, … in order")
    bad = sorted(set(piece_kinds) - set(PIECE_KINDS))
    if bad:
        raise ValueError(f"unknown piece kind(s) {bad} (known: {', '.join(PIECE_KINDS)})")
    n_images = int(piece_image.max()) + 1 if len(piece_image) else 0
    if len(cls_positions) != n_images:
        raise ValueError(f"inconsistent vision layout: {len(cls_positions)} CLS positions for {n_images} images")
    if len(marker_kinds) != len(marker_positions):
        raise ValueError(f"inconsistent vision layout: {len(marker_positions)} marker positions, "
                         f"{len(marker_kinds)} marker kinds")
    bad = sorted(set(marker_kinds) - set(MARKER_KINDS))
    if bad:
        raise ValueError(f"unknown marker kind(s) {bad} (known: {', '.join(MARKER_KINDS)})")
    vision = span_positions(spans)
    boxless = np.concatenate([cls_positions[cls_positions >= 0], marker_positions])
    if np.isin(boxless, vision).any() or len(np.unique(boxless)) != len(boxless):
        raise ValueError("inconsistent vision layout: a CLS or marker position is a vision token or repeats")
