"""How far the pooled attention maps of A and B lie apart: KL, Jensen–Shannon and Hausdorff.

**Smoothing.** KL is infinite where B has no mass and A has some, so both maps are first normalised
to sum 1 and then smoothed with an explicit ε > 0 over their V tokens:

    p̃_v = (p_v + ε) / (1 + V ε)        (still sums to 1, every p̃_v > 0).

**Divergences** (natural logarithm: values in nats):

    KL(A ‖ B) = Σ_v ã_v ln(ã_v / b̃_v)                      (= scipy.stats.entropy(ã, b̃))
    JS(A, B)  = ½ KL(A ‖ M) + ½ KL(B ‖ M),  M = (ã + b̃)/2   (∈ [0, ln 2])

We report the Jensen–Shannon **divergence** JS, not the Jensen–Shannon *distance* √JS that
:func:`scipy.spatial.distance.jensenshannon` returns (``jensenshannon(ã, b̃) ** 2 == JS``).

Closed forms: identical maps → KL = JS = 0. Disjoint one-hot maps (A on token i, B on token j ≠ i)
with Z = 1 + Vε: ã_i = b̃_j = (1+ε)/Z, ã_j = b̃_i = ε/Z, every other token equal in both, so

    KL(A ‖ B) = KL(B ‖ A) = [(1+ε) ln((1+ε)/ε) + ε ln(ε/(1+ε))] / Z = ln((1+ε)/ε) / (1 + Vε).

**Hausdorff.** The top set of a map is its ``k = max(1, ⌈fraction · V⌉)`` tokens of largest weight
(ties broken by token order), as points (row, column) of the token grid (unit = one token). With
sets S_A, S_B, ``h(A → B) = max_{s∈S_A} min_{t∈S_B} ‖s − t‖₂``
(:func:`scipy.spatial.distance.directed_hausdorff`), both directions and the symmetric
``H = max(h(A → B), h(B → A))``.

Maps: a sample's step-pooled map per (layer, head) (:func:`maps.pooled_maps`), pooled over heads
(``head_pooling``, :func:`vlmattn.maps.pool_heads`) — one map per layer — and over layers (nan-aware mean,
renormalised) for the ``all`` row. Every figure is NaN where either map is undefined.

**Within-condition reference.** :func:`within_condition` computes the same figures between the maps
of two different B samples, ``B_i`` and ``B_{(i+1) mod P}``: the level that a change of scene alone
produces (:mod:`.summary` compares the A–B divergences with it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.spatial.distance import directed_hausdorff

from ..maps import box_coords, piece_grids, pool_heads, pool_maps
from ..store import AttentionSample
from .pairs import paired, pooled_maps, sink_keep

COLUMNS = ["pair", "layer", "kl_ab", "kl_ba", "js", "hausdorff_ab", "hausdorff_ba", "hausdorff"]


def smooth(p: np.ndarray, epsilon: float) -> np.ndarray:
    """``p̃ [..., V]``: ``p`` normalised to sum 1 over the last axis, then ``(p + ε) / (1 + V ε)``."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    p = np.asarray(p, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(-1, keepdims=True)
    return (p + epsilon) / (1 + p.shape[-1] * epsilon)


def kl_divergence(p: np.ndarray, q: np.ndarray, *, epsilon: float) -> np.ndarray:
    """``KL(p ‖ q) [...]`` in nats between maps ``p, q [..., V]`` after :func:`smooth`; NaN where
    either is NaN."""
    ps, qs = smooth(p, epsilon), smooth(q, epsilon)
    return (ps * np.log(ps / qs)).sum(-1)


def js_divergence(p: np.ndarray, q: np.ndarray, *, epsilon: float) -> np.ndarray:
    """Jensen–Shannon divergence ``[...]`` in nats (not the distance √JS) between ``p, q [..., V]``
    after :func:`smooth`; in [0, ln 2], NaN where either is NaN."""
    ps, qs = smooth(p, epsilon), smooth(q, epsilon)
    m = (ps + qs) / 2
    js = 0.5 * (ps * np.log(ps / m)).sum(-1) + 0.5 * (qs * np.log(qs / m)).sum(-1)
    return np.maximum(js, 0.0)  # rounding can leave −1e-17 for identical maps


def top_tokens(p: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``max(1, ⌈fraction · V⌉)`` largest entries of ``p [V]`` (ties: lower index
    first); empty for an undefined (NaN) map."""
    p = np.asarray(p, np.float64)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    if np.isnan(p).any():
        return np.zeros(0, np.int64)
    k = max(1, int(np.ceil(fraction * len(p) - 1e-9)))
    return np.argsort(-p, kind="stable")[:k]


def hausdorff(points_a: np.ndarray, points_b: np.ndarray) -> tuple[float, float, float]:
    """``(h(A → B), h(B → A), max of both)`` between point sets ``[n, 2]`` and ``[m, 2]``
    (:func:`scipy.spatial.distance.directed_hausdorff`); NaN when a set is empty."""
    if len(points_a) == 0 or len(points_b) == 0:
        return np.nan, np.nan, np.nan
    ab = directed_hausdorff(points_a, points_b)[0]
    ba = directed_hausdorff(points_b, points_a)[0]
    return ab, ba, max(ab, ba)


def grid_coords(sample: AttentionSample) -> np.ndarray:
    """``[V, 2]`` (row, column) of each vision token in its image's token grid (one image only). A tiled
    layout (several pieces: base and high-resolution grids, tiles and a thumbnail…) gives each token's
    centre in units of the smallest token box (:func:`vlmattn.maps.box_coords`), so distances stay in
    grid units of the finest piece."""
    grids = piece_grids(sample)
    if sample.n_images != 1:
        raise ValueError(f"grid coordinates need a single image per sample, got {sample.n_images}")
    if len(grids) > 1:
        return box_coords(sample.token_boxes)
    (_, (rows, cols)), = grids
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([r, c], axis=1).astype(np.float64)


def layer_maps(sample: AttentionSample, *, step_pooling: str, renormalize: bool, min_vision_share: float,
               head_pooling: str, keep: np.ndarray | None = None) -> np.ndarray:
    """``[L + 1, V]``: the head-pooled map of each layer, then (last row) their nan-aware mean."""
    p = pooled_maps(sample, step_pooling=step_pooling, renormalize=renormalize, min_vision_share=min_vision_share,
                    keep=keep)
    per_layer = pool_heads(p, head_pooling, renormalize)  # [L, V]
    return np.concatenate([per_layer, pool_maps(per_layer, "mean", 0, renormalize)[None]])


def pair_divergence(p_a: np.ndarray, p_b: np.ndarray, coords: np.ndarray, *, epsilon: float,
                    top_fraction: float) -> dict[str, np.ndarray]:
    """Divergences between maps ``p_a, p_b [..., V]`` with token coordinates ``coords [V, 2]``: a dict
    of ``[...]`` arrays ``kl_ab``, ``kl_ba``, ``js`` (nats) and ``hausdorff_ab``, ``hausdorff_ba``,
    ``hausdorff`` (grid units, top ``top_fraction`` of tokens)."""
    p_a, p_b = np.asarray(p_a, np.float64), np.asarray(p_b, np.float64)
    if p_a.shape != p_b.shape:
        raise ValueError(f"maps differ in shape: {p_a.shape} vs {p_b.shape}")
    flat_a, flat_b = p_a.reshape(-1, p_a.shape[-1]), p_b.reshape(-1, p_b.shape[-1])
    h = np.array([hausdorff(coords[top_tokens(x, top_fraction)], coords[top_tokens(y, top_fraction)])
                  for x, y in zip(flat_a, flat_b, strict=True)]).reshape(*p_a.shape[:-1], 3)
    return {"kl_ab": kl_divergence(p_a, p_b, epsilon=epsilon), "kl_ba": kl_divergence(p_b, p_a, epsilon=epsilon),
            "js": js_divergence(p_a, p_b, epsilon=epsilon),
            "hausdorff_ab": h[..., 0], "hausdorff_ba": h[..., 1], "hausdorff": h[..., 2]}


def pair_frame(pair: int, p_a: np.ndarray, p_b: np.ndarray, coords: np.ndarray, *, epsilon: float,
               top_fraction: float) -> pd.DataFrame:
    """Rows :data:`COLUMNS` of one pair: :func:`pair_divergence` of its maps ``p_a, p_b [L + 1, V]``
    (per layer, then the layer-pooled map), ``layer`` = ``"0" … "L−1", "all"``."""
    d = pair_divergence(p_a, p_b, coords, epsilon=epsilon, top_fraction=top_fraction)
    layers = [str(k) for k in range(len(p_a) - 1)] + ["all"]
    return pd.DataFrame({"pair": pair, "layer": layers, **d})[COLUMNS]


def divergence_table(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], *,
                     step_pooling: str, renormalize: bool, min_vision_share: float, head_pooling: str, epsilon: float,
                     top_fraction: float, exclude_sinks: bool = False, sink_rule: dict | None = None
                     ) -> pd.DataFrame:
    """Per pair (``pair`` = its index in ``zip(samples_a, samples_b)``) and layer (``0 … L−1``, then
    ``all`` for the layer-pooled maps): :func:`pair_divergence` of the head-pooled maps
    (:func:`layer_maps`). Columns :data:`COLUMNS`; ``layer`` is a string column."""
    frames = []
    for i, (sa, sb) in enumerate(paired(samples_a, samples_b)):
        opts = dict(step_pooling=step_pooling, renormalize=renormalize, min_vision_share=min_vision_share,
                    head_pooling=head_pooling)
        ma = layer_maps(sa, **opts, keep=sink_keep(sa, exclude_sinks, sink_rule))
        mb = layer_maps(sb, **opts, keep=sink_keep(sb, exclude_sinks, sink_rule))
        frames.append(pair_frame(i, ma, mb, grid_coords(sa), epsilon=epsilon, top_fraction=top_fraction))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def within_condition(maps: Iterable[tuple[np.ndarray, np.ndarray]], *, epsilon: float, top_fraction: float
                     ) -> pd.DataFrame:
    """The within-condition reference of :func:`divergence_table`: the same divergences between the
    maps of two *different* samples of one condition (B), cyclically,

        null[i, l] = D(B_i, B_{(i+1) mod P})[l]        (KL(B_i ‖ B_{i+1}), KL(B_{i+1} ‖ B_i), JS, Hausdorff)

    for i = 0 … P−1, with D = :func:`pair_divergence`. It is the divergence a change of scene (and of
    sample) alone produces: a reference level for the A–B divergence of pair i.

    Parameters
    ----------
    maps : iterable of ``(p [L + 1, V], coords [V, 2])``
        Per B sample, in pair order: its per-layer maps and the layer-pooled map last (as
        :func:`layer_maps`), and its token coordinates (:func:`grid_coords`); consumed one at a time
        (the first and the previous maps are kept). Every sample must have the same shape and grid.
    epsilon, top_fraction
        Of :func:`pair_divergence`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, P·(L + 1) rows (pair-major), ``pair`` = i of B_i. All figures NaN when
        P < 3: with one sample there is no other to compare with, and with two both rows compare the
        same two samples, so the reference would rest on a single comparison.
    """
    first = prev = None
    frames, n = [], 0
    for p, coords in maps:
        p, coords = np.asarray(p, np.float64), np.asarray(coords, np.float64)
        if first is None:
            first = (p, coords)
        elif p.shape != first[0].shape or not np.array_equal(coords, first[1]):
            raise ValueError(f"within_condition needs maps of one shape and grid; sample {n} has maps "
                             f"{p.shape} vs {first[0].shape} of sample 0, or another grid")
        if prev is not None:
            frames.append(pair_frame(n - 1, prev, p, coords, epsilon=epsilon, top_fraction=top_fraction))
        prev, n = p, n + 1
    if n == 0:
        raise ValueError("within_condition needs at least one sample, got none")
    frames.append(pair_frame(n - 1, prev, first[0], first[1], epsilon=epsilon, top_fraction=top_fraction))
    out = pd.concat(frames, ignore_index=True)[COLUMNS]
    if n < 3:
        out.loc[:, COLUMNS[2:]] = np.nan
    return out


def within_condition_table(samples_b: Iterable[AttentionSample], *, step_pooling: str, renormalize: bool,
                           min_vision_share: float, head_pooling: str, epsilon: float, top_fraction: float,
                           exclude_sinks: bool = False, sink_rule: dict | None = None) -> pd.DataFrame:
    """:func:`within_condition` of the B samples of :func:`divergence_table` (same arguments): the
    divergence between B_i and B_{(i+1) mod P} per layer and ``all``. Raises ValueError when the
    samples differ in layers, heads or token grid."""
    opts = dict(step_pooling=step_pooling, renormalize=renormalize, min_vision_share=min_vision_share,
                head_pooling=head_pooling)
    return within_condition(((layer_maps(s, **opts, keep=sink_keep(s, exclude_sinks, sink_rule)), grid_coords(s))
                             for s in samples_b), epsilon=epsilon, top_fraction=top_fraction)


def analyse(a, b, options: dict, first) -> dict:
    """The ``divergence`` analysis of :mod:`.analyses`: :func:`divergence_table` and its summary
    against the within-condition reference (:func:`.summary.divergence_summary`)."""
    from .summary import divergence_summary, summary_options

    o = options
    kw = dict(**o["maps"], head_pooling=o["head_pooling"], **o["divergence"])
    table = divergence_table(a(), b(), **kw)
    null = within_condition_table(b(), **kw)
    return {"divergence": table,
            "divergence_summary": divergence_summary(table, null=null, **summary_options(o["statistics"]))}
