"""Shared views of a sample's attention over its vision tokens: pooling, sinks, regions and grids.

Notation: T decode steps, L layers, H heads, V vision tokens, K = H + len(head_pooling) head labels.
``a[t, l, h, v]`` is the raw attention of decode row t on vision token v; ``share = Σ_v a`` is the raw
share of the row landing on vision tokens; ``p = a / share`` (renormalised, the default) or ``p = a``
(raw). The vision tokens are those of ``/vision/spans``, each with a pixel box; a CLS token fed to
the LLM (``/vision/cls_positions``, LLaVA's ``"full"`` strategy) has none and is not among them.

Options every metric block shares (see ``schemas/config.schema.yaml``):

* ``renormalize``   renormalise each row over the kept vision tokens (default) or keep raw weights;
* ``head_pooling``  pooled head maps appended to the H individual heads: ``mean`` or ``max``;
* ``step_pooling``  ``first`` (row of the step that produces the first answer token), ``last`` (row
  of the final step), ``mean`` (mean over steps) or ``each`` (every step, labelled by its index);
* ``exclude_sinks`` ``false`` / ``true`` / ``both``: rows computed with all vision tokens
  (``sinks = included``) and/or with sink tokens (:func:`find_sinks`) zeroed before renormalising
  (``sinks = excluded``).

Regions: a vision token belongs to a box when its centre lies inside it (half-open,
``x0 ≤ x < x1``); a box containing no centre falls back to the token whose box contains the box
centre, so small objects are never empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..store import AttentionSample

HEAD_POOLS = ("mean", "max")
STEP_POOLS = ("first", "last", "mean", "each")
DEFAULT_STEP_POOLS = ("last", "mean")
SINK_MODES = {False: ("included",), True: ("excluded",), "both": ("included", "excluded")}
#: Defaults of the sink rule (``metrics.sinks``): a token is a sink when its attention exceeds
#: ``ratio / V`` in at least ``min_fraction`` of the (layer, head) pairs.
SINK_RULE = {"ratio": 5.0, "min_fraction": 0.5}
QUADRANTS = {
    "top_left": (0.0, 0.0, 0.5, 0.5),
    "top_right": (0.5, 0.0, 1.0, 0.5),
    "bottom_left": (0.0, 0.5, 0.5, 1.0),
    "bottom_right": (0.5, 0.5, 1.0, 1.0),
}


# --------------------------------------------------------------------------------------------- maps
def vision_attention(
    sample: AttentionSample, renormalize: bool = True, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(p [T, L, H, V], share [T, L, H])`` from the decode rows (float64).

    ``keep [V]`` (bool) zeroes the other vision tokens before the share and renormalisation.
    """
    raw = sample.decode[..., sample.vision_index].astype(np.float64)
    if keep is not None:
        raw = raw * np.asarray(keep, bool)
    share = raw.sum(-1)
    if not renormalize:
        return raw, share
    return raw / np.where(share > 0, share, 1.0)[..., None], share


def pool_steps(x: np.ndarray, how: str) -> np.ndarray:
    """Pool axis 0 (steps): ``first`` → x[0]; ``last`` → x[T-1]; ``mean`` → mean over t."""
    if how == "first":
        return x[0]
    if how == "last":
        return x[-1]
    if how == "mean":
        return x.mean(0)
    raise ValueError(f"unknown step pooling {how!r} (known: {STEP_POOLS})")


def select_steps(x: np.ndarray, step_pool: str, step: int | None) -> np.ndarray:
    """Axis 0 of ``x`` as a view selects it: ``each`` → ``x[step]``, else :func:`pool_steps`."""
    return x[step] if step_pool == "each" else pool_steps(x, step_pool)


def pool_heads(p: np.ndarray, how: str, renormalize: bool = True) -> np.ndarray:
    """Pool the head axis (-2) of ``p [..., H, V]`` → ``[..., V]``.

    ``mean``: mean over heads; ``max``: element-wise max over heads, renormalised to sum 1 when
    ``renormalize`` (a mean of distributions is already one).
    """
    if how == "mean":
        return p.mean(-2)
    if how == "max":
        m = p.max(-2)
        if renormalize:
            s = m.sum(-1, keepdims=True)
            m = m / np.where(s > 0, s, 1.0)
        return m
    raise ValueError(f"unknown head pooling {how!r} (known: {HEAD_POOLS})")


def pool_share(share: np.ndarray, how: str) -> np.ndarray:
    """Pool the head axis (-1) of per-head vision shares with the same operator as the maps."""
    return share.mean(-1) if how == "mean" else share.max(-1)


def with_pooled_heads(p: np.ndarray, share: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Append the pooled heads of ``cfg['head_pooling']``: ``p [..., H, V]`` → ``[..., K, V]``,
    ``share [..., H]`` → ``[..., K]``, and the K head labels (``"0"``…, ``"mean"``, ``"max"``)."""
    renorm = cfg.get("renormalize", True)
    heads = [str(h) for h in range(p.shape[-2])]
    maps, shares = [p], [share]
    for hp in cfg.get("head_pooling", HEAD_POOLS):
        maps.append(pool_heads(p, hp, renorm)[..., None, :])
        shares.append(pool_share(share, hp)[..., None])
        heads.append(hp)
    return np.concatenate(maps, axis=-2), np.concatenate(shares, axis=-1), heads


# -------------------------------------------------------------------------------------------- sinks
def sink_fraction(sample: AttentionSample, ratio: float) -> np.ndarray:
    """``f [V]``: fraction of (layer, head) pairs whose step-mean renormalised attention on the
    token exceeds ``ratio / V``."""
    p, _ = vision_attention(sample, True)
    n = p.shape[-1]
    return (p.mean(0) > ratio / n).mean((0, 1))


def find_sinks(sample: AttentionSample, ratio: float, min_fraction: float) -> np.ndarray:
    """Sink mask ``[V]``: tokens with :func:`sink_fraction` ≥ ``min_fraction``."""
    return sink_fraction(sample, ratio) >= min_fraction


def sink_variants(sample: AttentionSample, cfg: dict) -> list[tuple[str, np.ndarray | None]]:
    """``(label, keep [V] or None)`` per ``cfg['exclude_sinks']``; the rule is ``cfg['sink_rule']``
    (the pipeline passes ``metrics.sinks``), else :data:`SINK_RULE`."""
    mode = cfg.get("exclude_sinks", False)
    if mode not in SINK_MODES:
        raise ValueError(f"exclude_sinks must be one of false, true, both; got {mode!r}")
    out = []
    for label in SINK_MODES[mode]:
        if label == "included":
            out.append((label, None))
        else:
            rule = {**SINK_RULE, **cfg.get("sink_rule", {})}
            out.append((label, ~find_sinks(sample, rule["ratio"], rule["min_fraction"])))
    return out


# -------------------------------------------------------------------------------------------- views
@dataclass
class View:
    """One pooled slice: ``p [L, K, V]`` for K head labels, with matching ``share [L, K]``.

    ``step`` is the decode step of an ``each`` or ``last`` view (None for ``mean``); ``sinks`` is
    ``included`` or ``excluded``.
    """

    step_pool: str
    heads: list[str]
    p: np.ndarray
    share: np.ndarray
    step: int | None = None
    sinks: str = "included"

    def index(self) -> dict:
        """Id columns ``step_pool, step, sinks, layer, head`` of the L·K rows (layer-major)."""
        n_layers, n_heads = self.p.shape[:2]
        return {
            "step_pool": self.step_pool,
            "step": pd.array([self.step] * (n_layers * n_heads), dtype="Int64"),
            "sinks": self.sinks,
            "layer": np.repeat(np.arange(n_layers), n_heads),
            "head": np.tile(self.heads, n_layers),
        }


def views(sample: AttentionSample, cfg: dict) -> Iterator[View]:
    """Per sink variant, per step pooling in ``cfg['step_pooling']`` (each step for ``each``): every
    head, then each head pooling in ``cfg['head_pooling']`` (steps are pooled before heads)."""
    renorm = cfg.get("renormalize", True)
    for label, keep in sink_variants(sample, cfg):
        p, share = vision_attention(sample, renorm, keep)
        for sp in cfg.get("step_pooling", DEFAULT_STEP_POOLS):
            if sp == "each":
                for t in range(p.shape[0]):
                    pk, sk, heads = with_pooled_heads(p[t], share[t], cfg)
                    yield View(sp, heads, pk, sk, step=t, sinks=label)
            else:
                pk, sk, heads = with_pooled_heads(pool_steps(p, sp), pool_steps(share, sp), cfg)
                step = {"first": 0, "last": p.shape[0] - 1}.get(sp)
                yield View(sp, heads, pk, sk, step=step, sinks=label)


@dataclass
class Steps:
    """Every decode step, heads pooled: ``p [T, L, K, V]``, ``share [T, L, K]``."""

    sinks: str
    heads: list[str]
    p: np.ndarray
    share: np.ndarray


def step_views(sample: AttentionSample, cfg: dict) -> Iterator[Steps]:
    """Per sink variant, all steps unpooled (for per-token metrics); heads as in :func:`views`."""
    for label, keep in sink_variants(sample, cfg):
        p, share = vision_attention(sample, cfg.get("renormalize", True), keep)
        pk, sk, heads = with_pooled_heads(p, share, cfg)
        yield Steps(label, heads, pk, sk)


# ------------------------------------------------------------------------------------------ regions
def token_areas(sample: AttentionSample) -> np.ndarray:
    """Each vision token's share of the total token area, ``[V]`` (sums to 1)."""
    b = sample.token_boxes.astype(np.float64)
    a = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return a / a.sum() if a.sum() > 0 else np.full(len(a), 1.0 / max(len(a), 1))


def box_mask(sample: AttentionSample, box) -> np.ndarray:
    """Tokens ``[V]`` (bool) whose centre lies in the normalised ``box = (x0, y0, x1, y1)``; if none,
    the token(s) whose box contains the box centre."""
    x0, y0, x1, y1 = box
    c = sample.token_centres
    m = (c[:, 0] >= x0) & (c[:, 0] < x1) & (c[:, 1] >= y0) & (c[:, 1] < y1)
    if m.any():
        return m
    w, h = sample.image_size
    tb = sample.token_boxes / np.array([w, h, w, h], np.float64)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (tb[:, 0] <= cx) & (cx < tb[:, 2]) & (tb[:, 1] <= cy) & (cy < tb[:, 3])


@dataclass
class Region:
    """A named set of vision tokens: ``kind`` is image, quadrant, roi or object; ``box`` normalised."""

    name: str
    kind: str
    box: tuple[float, float, float, float]
    mask: np.ndarray
    area: float


def object_names(labels: list[str], colours: list[str]) -> list[str]:
    """``colour_label`` (or ``label``) per ground-truth object, suffixed ``_i`` where not unique."""
    names = [f"{c}_{lab}" if c else lab for lab, c in zip(labels, colours or [""] * len(labels), strict=True)]
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def object_boxes(sample: AttentionSample) -> np.ndarray:
    """Ground-truth boxes normalised to [0, 1], ``[O, 4]``."""
    w, h = sample.image_size
    return np.asarray(sample.boxes, np.float64).reshape(-1, 4) / np.array([w, h, w, h], np.float64)


def regions(sample: AttentionSample, cfg: dict, image: bool = True, quadrants: bool = True) -> list[Region]:
    """The whole image, the four quadrants, the ROIs of ``cfg['regions']`` (name → normalised box)
    and, when ``cfg['objects']`` (default true), each ground-truth box."""
    area = token_areas(sample)
    out = []

    def add(name, kind, box):
        m = box_mask(sample, box)
        out.append(Region(name, kind, tuple(float(v) for v in box), m, float(area[m].sum())))

    if image:
        out.append(Region("image", "image", (0.0, 0.0, 1.0, 1.0), np.ones(len(area), bool), 1.0))
    if quadrants:
        for name, box in QUADRANTS.items():
            add(name, "quadrant", box)
    for name, box in cfg.get("regions", {}).items():
        add(name, "roi", box)
    if cfg.get("objects", True):
        for name, box in zip(object_names(sample.labels, sample.colours), object_boxes(sample), strict=True):
            add(name, "object", box)
    return out


def quadrant_of(x: float, y: float) -> str:
    """Quadrant name of a point in [0, 1]² (the 0.5 lines belong to the right / bottom halves)."""
    return f"{'top' if y < 0.5 else 'bottom'}_{'left' if x < 0.5 else 'right'}"


# --------------------------------------------------------------------------------------------- grid
def image_grids(sample: AttentionSample) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Per image, its vision-token indices (into ``[V]``) and grid ``(rows, cols)``, row-major."""
    out, start = [], 0
    for rows, cols in np.asarray(sample.grid).reshape(-1, 2):
        n = int(rows * cols)
        out.append((np.arange(start, start + n), (int(rows), int(cols))))
        start += n
    if start != len(sample.vision_index):
        raise ValueError(f"grids cover {start} tokens but the sample has {len(sample.vision_index)} vision tokens")
    return out


def label_tokens(mask: np.ndarray, sample: AttentionSample, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """Connected components of ``mask [V]`` on each image grid (``scipy.ndimage.label``; 4- or
    8-connected): labels ``[V]`` (0 = outside, 1..n) and n."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels = np.zeros(len(mask), np.int64)
    n = 0
    for idx, shape in image_grids(sample):
        lab, k = ndimage.label(np.asarray(mask)[idx].reshape(shape), structure=structure)
        labels[idx] = np.where(lab.ravel() > 0, lab.ravel() + n, 0)
        n += k
    return labels, n


def local_maxima(p: np.ndarray, sample: AttentionSample, size: int = 3) -> np.ndarray:
    """Tokens ``[V]`` equal to the maximum of their ``size × size`` grid neighbourhood
    (``scipy.ndimage.maximum_filter``, outside the image counts as −∞)."""
    from scipy import ndimage

    out = np.zeros(len(p), bool)
    for idx, shape in image_grids(sample):
        g = np.asarray(p, np.float64)[idx].reshape(shape)
        out[idx] = (g == ndimage.maximum_filter(g, size=size, mode="constant", cval=-np.inf)).ravel()
    return out


def top_mass_mask(p: np.ndarray, q: float) -> np.ndarray:
    """Over the last axis: the fewest tokens whose largest weights reach ``q`` of the total (ties
    broken by token order), as a bool mask of p's shape."""
    order = np.argsort(-p, axis=-1, kind="stable")
    c = np.cumsum(np.take_along_axis(p, order, -1), axis=-1)
    # relative slack of a few ulps so that exact ties (e.g. 5 × 0.1 vs 0.5) count as reached
    n = (c >= q * c[..., -1:] * (1 - 1e-12)).argmax(-1) + 1
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(p.shape[-1]), -1)
    return ranks < n[..., None]
