"""One pooled attention map per (layer, head) of a sample, the input of every contrast.

Notation as in :mod:`vlmattn.maps`: T decode steps, L layers, H heads, V vision tokens.
The map of a sample is

    p[l, h, v] = pool_t p_t[l, h, v],   p_t = a_t / Σ_v a_t   (renormalised; raw: p_t = a_t)

with ``pool_t`` the step pooling (``first``: the row producing the answer's first token, ``last``,
``mean``: nan-aware mean renormalised to Σ_v = 1). A row whose raw vision share Σ_v a_t is below
``min_vision_share`` (or 0) is undefined and its map is NaN (:func:`vlmattn.maps.vision_attention`); a
pooled map without a defined member is NaN. Sink tokens may be zeroed before renormalising
(``keep``, :func:`sink_keep`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..maps import QUADRANTS, find_sinks, pool_step_maps, sample_answer_step, vision_attention
from ..store import AttentionSample

STEP_POOLS = ("first", "last", "mean")


def roi_box(roi) -> tuple[float, float, float, float]:
    """The box ``(x0, y0, x1, y1)`` in image fractions of ``roi``: a quadrant name of
    :data:`vlmattn.maps.QUADRANTS` or a box itself (needs x0 < x1, y0 < y1 inside [0, 1]). A pair's ROI,
    which may also be the object that tells A from B, is :func:`pair_roi`'s."""
    if isinstance(roi, str):
        if roi not in QUADRANTS:
            raise ValueError(f"unknown roi {roi!r} (known: {', '.join(QUADRANTS)}, or a box [x0, y0, x1, y1])")
        return QUADRANTS[roi]
    box = tuple(float(v) for v in np.asarray(roi, np.float64).ravel())
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(f"roi must be a box [x0, y0, x1, y1] with 0 ≤ x0 < x1 ≤ 1, 0 ≤ y0 < y1 ≤ 1; got {roi!r}")
    return box


def object_box(sample_a: AttentionSample, sample_b: AttentionSample) -> tuple[float, float, float, float]:
    """The box ``(x0, y0, x1, y1)`` in image fractions around the ground-truth objects of ``sample_a``
    that ``sample_b`` lacks (same label, colour and pixel box): the object that tells condition A from B,
    e.g. a corner pair's corner object. Raises ValueError when A has no such object."""
    theirs = {(lab, col, tuple(np.round(np.asarray(box, np.float64), 3)))
              for lab, col, box in zip(sample_b.labels, _colours(sample_b), sample_b.boxes, strict=True)}
    boxes = [np.asarray(box, np.float64)
             for lab, col, box in zip(sample_a.labels, _colours(sample_a), sample_a.boxes, strict=True)
             if (lab, col, tuple(np.round(np.asarray(box, np.float64), 3))) not in theirs]
    if not boxes:
        raise ValueError(f"roi 'object': image {sample_a.attrs.get('image_id', 'A')!r} holds no object that "
                         f"{sample_b.attrs.get('image_id', 'B')!r} lacks (ground-truth boxes)")
    b = np.stack(boxes)
    w, h = (float(v) for v in sample_a.image_size)
    return (b[:, 0].min() / w, b[:, 1].min() / h, b[:, 2].max() / w, b[:, 3].max() / h)


def _colours(sample: AttentionSample) -> list[str]:
    return list(sample.colours) if len(sample.colours) == len(sample.labels) else [""] * len(sample.labels)


def pair_roi(sample_a: AttentionSample, sample_b: AttentionSample, roi) -> tuple[float, float, float, float]:
    """The ROI box of one pair in image fractions: :func:`object_box` for ``roi="object"``, else
    :func:`roi_box` (a quadrant name or a box, the same for every pair)."""
    return object_box(sample_a, sample_b) if isinstance(roi, str) and roi == "object" else roi_box(roi)


def sink_keep(sample: AttentionSample, exclude_sinks: bool, sink_rule: dict | None) -> np.ndarray | None:
    """``keep [V]`` (bool): the sample's non-sink tokens (:func:`vlmattn.maps.find_sinks` with ``sink_rule``'s
    ``ratio``, ``min_fraction``, ``min_vision_share``) when ``exclude_sinks``, else None (keep all)."""
    if not exclude_sinks:
        return None
    if sink_rule is None:
        raise ValueError("exclude_sinks needs a sink_rule (ratio, min_fraction, min_vision_share)")
    return ~find_sinks(sample, sink_rule["ratio"], sink_rule["min_fraction"], sink_rule["min_vision_share"])


def pooled_maps(sample: AttentionSample, *, step_pooling: str, renormalize: bool, min_vision_share: float,
                keep: np.ndarray | None = None) -> np.ndarray:
    """``p [L, H, V]`` (float64): the step-pooled map of every (layer, head); NaN where undefined.

    ``first`` is the answer's row t* (:func:`vlmattn.maps.sample_answer_step`), as in the
    metric tables; ``keep [V]`` zeroes the other vision tokens before renormalising (None: keep all)."""
    if step_pooling not in STEP_POOLS:
        raise ValueError(f"step_pooling must be one of {', '.join(STEP_POOLS)}; got {step_pooling!r}")
    p, _ = vision_attention(sample, renormalize, min_vision_share, keep)
    if step_pooling == "first":
        return p[sample_answer_step(sample)]
    return pool_step_maps(p, step_pooling, renormalize)


def same_tokens(a: AttentionSample, b: AttentionSample) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same layers, heads and vision-token grid."""
    if (a.n_layers, a.n_heads) != (b.n_layers, b.n_heads):
        raise ValueError(f"samples differ in layers × heads: {(a.n_layers, a.n_heads)} vs {(b.n_layers, b.n_heads)}")
    if np.asarray(a.grid).tolist() != np.asarray(b.grid).tolist():
        raise ValueError(f"samples differ in vision-token grid: {np.asarray(a.grid).tolist()} vs "
                         f"{np.asarray(b.grid).tolist()}")


def paired(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample]
           ) -> Iterator[tuple[AttentionSample, AttentionSample]]:
    """``(sample_a, sample_b)`` per pair, consumed one pair at a time (generators reading one file at a
    time keep memory flat). Raises ValueError when the iterables differ in length or are empty, or a
    pair differs in layers, heads or token grid (:func:`same_tokens`)."""
    sentinel = object()
    ia, ib = iter(samples_a), iter(samples_b)
    n = 0
    while True:
        sa, sb = next(ia, sentinel), next(ib, sentinel)
        if sa is sentinel or sb is sentinel:
            if sa is not sb:
                raise ValueError("samples_a and samples_b must hold the same number of samples (one per pair)")
            if n == 0:
                raise ValueError("no pairs")
            return
        same_tokens(sa, sb)
        n += 1
        yield sa, sb
