"""Shared views of a sample's attention over its vision tokens: pooling, sinks, regions and grids.

Notation: T decode steps, L layers, H heads, V vision tokens, K = H + len(head_pooling) head labels.
``a[t, l, h, v]`` is the raw attention of decode row t on vision token v; ``share = Σ_v a`` is the raw
share of the row landing on vision tokens; ``p = a / share`` (renormalised, the default) or ``p = a``
(raw). The vision tokens are those of ``/vision/spans``, each with a pixel box; a CLS token fed to
the LLM (``/vision/cls_positions``, LLaVA's ``"full"`` strategy) has none and is not among them.

Undefined maps. A map is **undefined** when its row puts (almost) nothing on the kept vision tokens,
``share < min_vision_share`` (or ``share = 0``): its ``p`` is all NaN. The rule for every metric
table: a column computed from the map is NaN (missing for integer columns) on the rows of an
undefined map; a column that does not depend on the map stays filled. Those are the ids, what
describes the tokens, region or box a row is about (``n_vision``, ``region``, ``region_kind``,
``n_tokens`` and ``area_share`` in spatial, ``object``, ``label``, ``box_area``, ``size_class``,
``n_box_tokens`` and ``box_token_share`` in grounding, ``level`` in geometry, ``token`` in dynamics),
and the raw shares of the row (``vision_share``, layer_profile's ``*_share``).

Pooling. Pooled maps (over heads, steps or layers) are nan-aware: the mean / max of the defined
members, renormalised to Σ_v = 1 (with ``renormalize``); a pooled map with no defined member is NaN.
A pooled ``vision_share`` pools the raw shares of **all** members, undefined ones included (mean /
max over the H heads, mean over the T steps): the share is defined for every row, and leaving out
the rows that look away from the image would raise it, so the mean-pooled share stays the vision
share of the head-mean (step-mean) row, ``Σ_v mean_h a[h, v] = mean_h share[h]``.

Sinks excluded. The s sink tokens are zeroed before renormalising, so the map is a distribution over
the N = V − s kept tokens (``View.keep``); figures that depend on the number of tokens (the
normalised entropy H / log N, Gini, peak / mean, concentration's ``n_vision``) count those N tokens,
not the V tokens with zeros at the sinks.

The answer's step. ``step_pooling: first`` takes decode row t* = :func:`answer_step`: the first
generated token that carries text (not a special token, and its decoded text holds a letter or a
digit), so a leading space, punctuation or special token (Llama's ``"▁"`` before a digit, a
``"<|box_start|>"``) is passed over; t* = 0 when no token carries text. The rows' ``step`` column
gives t*.

Options every metric block shares (see ``vlmattn/schemas/config.schema.yaml``, the one source of
their defaults; the functions here read them as ``cfg[key]``):

* ``min_vision_share`` below this raw vision share a (step, layer, head) map is undefined (NaN);
* ``renormalize``   renormalise each row over the kept vision tokens (default) or keep raw weights;
* ``head_pooling``  pooled head maps appended to the H individual heads: ``mean`` or ``max``;
* ``step_pooling``  ``first`` (row t* of the answer's first text token, :func:`answer_step`), ``last``
  (row of the final step), ``mean`` (mean over steps) or ``each`` (every step, labelled by its index);
* ``exclude_sinks`` ``false`` / ``true`` / ``both``: rows computed with all vision tokens
  (``sinks = included``) and/or with sink tokens (:func:`find_sinks`) zeroed before renormalising
  (``sinks = excluded``).

Regions: a vision token belongs to a box when its centre lies inside it (half-open,
``x0 ≤ x < x1``); a box containing no centre falls back to the token whose box contains the box
centre, so small objects are never empty.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .store import AttentionSample

#: The options of ``metrics.sinks`` that make up the sink rule (see :func:`find_sinks`).
SINK_RULE_KEYS = ("ratio", "min_fraction", "min_vision_share")
HEAD_POOLS = ("mean", "max")
STEP_POOLS = ("first", "last", "mean", "each")
SINK_MODES = {False: ("included",), True: ("excluded",), "both": ("included", "excluded")}
QUADRANTS = {
    "top_left": (0.0, 0.0, 0.5, 0.5),
    "top_right": (0.5, 0.0, 1.0, 0.5),
    "bottom_left": (0.0, 0.5, 0.5, 1.0),
    "bottom_right": (0.5, 0.5, 1.0, 1.0),
}


# --------------------------------------------------------------------------------------------- maps
def vision_attention(
    sample: AttentionSample, renormalize: bool, min_share: float, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(p [T, L, H, V], share [T, L, H])`` from the decode rows (float64).

    ``share = Σ_v a`` over the kept vision tokens (``keep [V]``, bool, zeroes the others); ``p = a /
    share`` (``renormalize``) or ``a``. A row with ``share < min_share`` or ``share = 0`` has an
    undefined map: ``p`` is NaN over its V tokens.
    """
    att = Attention(sample)
    return att.maps(keep, renormalize, min_share), att.shares(keep)


def _keep_key(keep: np.ndarray | None) -> bytes | None:
    return None if keep is None else np.asarray(keep, bool).tobytes()


class Attention:
    """A sample's decode rows over its vision tokens, read once (``decode_vision``), with what
    :func:`vision_attention` derives from them computed once per ``(keep, renormalize, min_share)``:
    the shares, the maps of the rows a view needs (``rows``), of all rows (``maps``) and the nan-aware
    step mean (``step_mean``, :func:`pool_step_maps`). The values are those of :func:`vision_attention`
    bit for bit: the same float64 operations on the same rows, step by step."""

    def __init__(self, sample: AttentionSample):
        self.sample = sample
        self._raw = None
        self._memo: dict = {}

    @property
    def raw(self) -> np.ndarray:
        if self._raw is None:
            s = self.sample
            idx = s.vision_index if s.decode is not None else None
            if idx is not None and len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
                # one span: the values of decode_vision's gather, as a view (rows are converted one by one)
                self._raw = s.decode[..., idx[0]: idx[0] + len(idx)]
            else:
                self._raw = s.decode_vision
        return self._raw

    def _row(self, t: int, keep: np.ndarray | None) -> np.ndarray:
        """Row t as float64, the tokens outside ``keep`` zeroed (``a · keep`` of non-negative weights)."""
        r = self.raw[t].astype(np.float64)
        if keep is not None:
            r[..., ~np.asarray(keep, bool)] = 0.0
        return r

    def shares(self, keep: np.ndarray | None) -> np.ndarray:
        """``share [T, L, H]`` (float64) over the kept tokens."""
        key = ("share", _keep_key(keep))
        if key not in self._memo:
            self._memo[key] = np.stack([self._row(t, keep).sum(-1) for t in range(self.raw.shape[0])])
        return self._memo[key]

    def valid(self, keep: np.ndarray | None, min_share: float) -> np.ndarray:
        share = self.shares(keep)
        return (share > 0) & (share >= min_share)

    def _map(self, r: np.ndarray, share: np.ndarray, valid: np.ndarray, renormalize: bool) -> np.ndarray:
        if renormalize:
            r /= np.where(valid, share, 1.0)[..., None]
        r[~valid] = np.nan
        return r

    def rows(self, keep: np.ndarray | None, renormalize: bool, min_share: float, t: int) -> np.ndarray:
        """``p[t] [L, H, V]`` of :func:`vision_attention`."""
        key = ("maps", _keep_key(keep), renormalize, min_share)
        if key in self._memo:
            return self._memo[key][t]
        key = ("row", _keep_key(keep), renormalize, min_share, int(t) % self.raw.shape[0])
        if key not in self._memo:
            share, valid = self.shares(keep)[t], self.valid(keep, min_share)[t]
            self._memo[key] = self._map(self._row(t, keep), share, valid, renormalize)
        return self._memo[key]

    def row(self, keep: np.ndarray | None, renormalize: bool, min_share: float, t: int) -> np.ndarray:
        """:meth:`rows` without keeping the row (for callers that visit every step once)."""
        key = ("row", _keep_key(keep), renormalize, min_share, int(t) % self.raw.shape[0])
        full = self._memo.get(("maps", _keep_key(keep), renormalize, min_share))
        if full is not None or key in self._memo:
            return self.rows(keep, renormalize, min_share, t)
        share, valid = self.shares(keep)[t], self.valid(keep, min_share)[t]
        return self._map(self._row(t, keep), share, valid, renormalize)

    def maps(self, keep: np.ndarray | None, renormalize: bool, min_share: float) -> np.ndarray:
        """``p [T, L, H, V]`` of :func:`vision_attention`."""
        key = ("maps", _keep_key(keep), renormalize, min_share)
        if key not in self._memo:
            out = np.empty(self.raw.shape, np.float64)
            share, valid = self.shares(keep), self.valid(keep, min_share)
            for t in range(len(out)):
                out[t] = self.raw[t]
                if keep is not None:
                    out[t][..., ~np.asarray(keep, bool)] = 0.0
                self._map(out[t], share[t], valid[t], renormalize)
            self._memo[key] = out
        return self._memo[key]

    def step_mean(self, keep: np.ndarray | None, renormalize: bool, min_share: float) -> np.ndarray:
        """``pool_step_maps(p, "mean", renormalize)`` of :func:`vision_attention`'s ``p``, ``[L, H, V]``:
        the rows' sum over the defined steps in step order (as ``np.nanmean``) / their count."""
        key = ("mean", _keep_key(keep), renormalize, min_share)
        if key not in self._memo:
            full = self._memo.get(("maps", _keep_key(keep), renormalize, min_share))
            known = ("share", _keep_key(keep)) in self._memo
            acc = np.zeros(self.raw.shape[1:], np.float64)
            share = self.shares(keep) if known or full is not None else np.zeros(self.raw.shape[:-1])
            valid = np.zeros(share.shape, bool)
            for t in range(self.raw.shape[0]):
                if full is not None:
                    p = full[t]
                else:
                    p = self._row(t, keep)
                    if not known:
                        share[t] = p.sum(-1)  # as shares() sums it
                if full is None:
                    valid[t] = (share[t] > 0) & (share[t] >= min_share)
                    if renormalize:
                        p /= np.where(valid[t], share[t], 1.0)[..., None]
                else:
                    valid[t] = (share[t] > 0) & (share[t] >= min_share)
                np.add(acc, p, out=acc, where=valid[t][..., None])
            if not known:
                self._memo[("share", _keep_key(keep))] = share
            with np.errstate(invalid="ignore", divide="ignore"):
                m = acc / valid.sum(0)[..., None]
            self._memo[key] = normalise(m) if renormalize else m
        return self._memo[key]


def defined(p: np.ndarray) -> np.ndarray:
    """``[...]`` (bool): which maps ``p [..., V]`` are defined (not NaN)."""
    return ~np.isnan(p).any(-1)


def int_column(x: np.ndarray, ok: np.ndarray) -> pd.arrays.IntegerArray:
    """Integer values ``x`` as a nullable ``Int64`` column, missing (NaN in the CSV) where not ``ok``."""
    x, ok = np.asarray(x).ravel(), np.asarray(ok, bool).ravel()
    return pd.arrays.IntegerArray(np.where(ok, x, 0).astype(np.int64), ~ok)


def normalise(p: np.ndarray) -> np.ndarray:
    """``p [..., V]`` divided by its sum over V (NaN maps stay NaN)."""
    return p / p.sum(-1, keepdims=True)


def pool_maps(p: np.ndarray, how: str, axis: int, renormalize: bool) -> np.ndarray:
    """Pool maps ``p [..., V]`` over ``axis`` (not the last), leaving undefined (NaN) members out:

    ``first`` / ``last`` → the first / last member (NaN when it is undefined); ``mean`` → ``np.nanmean``;
    ``max`` → element-wise ``np.nanmax``. The pooled mean / max is renormalised to Σ_v = 1 when
    ``renormalize``; it is NaN when no member is defined.
    """
    if how == "first":
        return np.take(p, 0, axis)
    if how == "last":
        return np.take(p, -1, axis)
    if how not in ("mean", "max"):
        raise ValueError(f"unknown pooling {how!r} (known: first, last, mean, max)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices → NaN, as intended
        if how == "max":
            m = np.nanmax(p, axis=axis)
        else:  # np.nanmean's arithmetic (NaN → 0, sum, ÷ count) in fewer passes
            nan = np.isnan(p)
            m = np.where(nan, 0.0, p).sum(axis) / (p.shape[axis] - np.count_nonzero(nan, axis=axis))
    return normalise(m) if renormalize else m


def pool_steps(x: np.ndarray, how: str) -> np.ndarray:
    """Pool axis 0 (steps) of per-row values (shares; maps: :func:`pool_step_maps`): ``first`` → x[0];
    ``last`` → x[T-1]; ``mean`` → mean over all t (undefined rows included, see the module docstring).
    :func:`views` takes the answer's row t* (:func:`answer_step`) for ``first`` instead of x[0]."""
    if how == "first":
        return x[0]
    if how == "last":
        return x[-1]
    if how == "mean":
        return x.mean(0)
    raise ValueError(f"unknown step pooling {how!r} (known: {STEP_POOLS})")


def pool_step_maps(p: np.ndarray, how: str, renormalize: bool) -> np.ndarray:
    """Pool axis 0 (steps) of maps ``p [T, ..., V]`` with :func:`pool_maps` (``first`` → p[0], ``last``,
    ``mean``); :func:`views` takes the answer's row t* (:func:`answer_step`) for ``first``."""
    if how not in ("first", "last", "mean"):
        raise ValueError(f"unknown step pooling {how!r} (known: {STEP_POOLS})")
    return pool_maps(p, how, 0, renormalize)


def select_steps(x: np.ndarray, step_pool: str, step: int | None) -> np.ndarray:
    """Axis 0 of per-row values ``x`` as a :class:`View` selects it: ``x[step]`` for a view of one row
    (``first``, ``last``, ``each``), else (``mean``) :func:`pool_steps`."""
    return pool_steps(x, step_pool) if step is None else x[step]


def carries_text(tokens: Sequence[str], special: np.ndarray | None) -> np.ndarray:
    """``[T]`` (bool): generated token t carries text: it is not special (``special [T]`` bool, None:
    none is) and its decoded text ``tokens[t]`` holds a letter or a digit (``str.isalnum`` of some
    character). Whitespace, punctuation and special tokens do not."""
    text = np.array([any(ch.isalnum() for ch in tok) for tok in tokens], bool)
    return text if special is None else text & ~np.asarray(special, bool)[: len(text)]


def answer_step(tokens: Sequence[str], special: np.ndarray | None) -> int:
    """t* = the first t with :func:`carries_text`, the decode row ``step_pooling: first`` takes; 0 when
    no generated token carries text."""
    hit = np.flatnonzero(carries_text(tokens, special))
    return int(hit[0]) if len(hit) else 0


def sample_answer_step(sample: AttentionSample) -> int:
    """:func:`answer_step` of the sample's ``generated_tokens`` / ``generated_special``, within its T
    decode rows."""
    n = sample.n_steps
    special = None if sample.generated_special is None else np.asarray(sample.generated_special)[:n]
    return answer_step(list(sample.generated_tokens)[:n], special)


def measured(p: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """The tokens a map is a distribution over: ``p [..., V]`` → ``p[..., keep]`` (``[..., N]``, N =
    Σ keep; ``keep [V]`` bool, None: all V tokens)."""
    return p if keep is None else p[..., np.asarray(keep, bool)]


def pool_heads(p: np.ndarray, how: str, renormalize: bool) -> np.ndarray:
    """Pool the head axis (-2) of maps ``p [..., H, V]`` → ``[..., V]`` with :func:`pool_maps`.

    ``mean``: nan-aware mean over the defined heads; ``max``: element-wise max over them; both
    renormalised to Σ_v = 1 when ``renormalize`` (NaN without a defined head).
    """
    if how not in HEAD_POOLS:
        raise ValueError(f"unknown head pooling {how!r} (known: {HEAD_POOLS})")
    return pool_maps(p, how, -2, renormalize)


def pool_share(share: np.ndarray, how: str) -> np.ndarray:
    """Pool the head axis (-1) of per-head vision shares with the same operator as the maps."""
    return share.mean(-1) if how == "mean" else share.max(-1)


def with_pooled_heads(p: np.ndarray, share: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Append the pooled heads of ``cfg['head_pooling']``: ``p [..., H, V]`` → ``[..., K, V]``,
    ``share [..., H]`` → ``[..., K]``, and the K head labels (``"0"``…, ``"mean"``, ``"max"``)."""
    renorm = cfg["renormalize"]
    heads = [str(h) for h in range(p.shape[-2])]
    maps, shares = [p], [share]
    for hp in cfg["head_pooling"]:
        maps.append(pool_heads(p, hp, renorm)[..., None, :])
        shares.append(pool_share(share, hp)[..., None])
        heads.append(hp)
    return np.concatenate(maps, axis=-2), np.concatenate(shares, axis=-1), heads


# -------------------------------------------------------------------------------------------- sinks
def sink_fraction(sample: AttentionSample, ratio: float, min_share: float, att: Attention | None = None) -> np.ndarray:
    """``f [V]``: fraction of the (layer, head) pairs with a defined step-mean renormalised map
    (:func:`vision_attention` with ``min_share``, :func:`pool_step_maps`) whose weight on the token
    exceeds ``ratio / V``; NaN when no pair is defined. ``att``: the sample's :class:`Attention`."""
    att = att or Attention(sample)
    return fraction_above(att.step_mean(None, True, min_share), ratio)


def fraction_above(pm: np.ndarray, ratio: float) -> np.ndarray:
    """``f [V]`` of :func:`sink_fraction` from the step-mean maps ``pm [L, H, V]`` (NaN: undefined)."""
    above = np.where(np.isnan(pm), np.nan, pm > ratio / pm.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(above, axis=(0, 1))


def find_sinks(sample: AttentionSample, ratio: float, min_fraction: float, min_share: float,
               att: Attention | None = None) -> np.ndarray:
    """Sink mask ``[V]``: tokens with :func:`sink_fraction` ≥ ``min_fraction`` (never where it is NaN,
    as NaN compares False)."""
    return sink_fraction(sample, ratio, min_share, att) >= min_fraction


def sink_variants(sample: AttentionSample, cfg: dict,
                  att: Attention | None = None) -> list[tuple[str, np.ndarray | None]]:
    """``(label, keep [V] or None)`` per ``cfg['exclude_sinks']``; the rule is ``cfg['sink_rule']``
    (``ratio``, ``min_fraction``, ``min_vision_share`` of ``metrics.sinks``, see
    :func:`vlmattn.metrics.options.metric_params`). ``att``: the sample's :class:`Attention`."""
    mode = cfg["exclude_sinks"]
    if mode not in SINK_MODES:
        raise ValueError(f"exclude_sinks must be one of false, true, both; got {mode!r}")
    out = []
    for label in SINK_MODES[mode]:
        if label == "included":
            out.append((label, None))
        else:
            rule = cfg["sink_rule"]
            out.append((label, ~find_sinks(sample, rule["ratio"], rule["min_fraction"], rule["min_vision_share"],
                                           att)))
    return out


def per_head(cfg: dict) -> bool:
    """``cfg['per_head']``: rows for the single heads too, or only for the pooled heads of
    ``head_pooling``; false without a head pooling is an error."""
    single = cfg["per_head"]
    if not single and not list(cfg["head_pooling"]):
        raise ValueError("per_head: false needs a head_pooling (mean and / or max): with head_pooling: [] "
                         "there would be no rows")
    return single


def head_views(p: np.ndarray, share: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`with_pooled_heads`, less the single heads when ``per_head`` is false (:func:`per_head`)."""
    pk, sk, heads = with_pooled_heads(p, share, cfg)
    if per_head(cfg):
        return pk, sk, heads
    n = p.shape[-2]
    return pk[..., n:, :], sk[..., n:], heads[n:]


# -------------------------------------------------------------------------------------------- views
@dataclass
class View:
    """One pooled slice: ``p [L, K, V]`` for K head labels, with matching ``share [L, K]``.

    ``step`` is the decode row of a ``first`` (t*, :func:`answer_step`), ``last`` or ``each`` view
    (None for ``mean``); ``sinks`` is ``included`` or ``excluded``; ``keep [V]`` (bool) the tokens the
    maps are over (the non-sinks; None: all V).
    """

    step_pool: str
    heads: list[str]
    p: np.ndarray
    share: np.ndarray
    step: int | None = None
    sinks: str = "included"
    keep: np.ndarray | None = None

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


def views(sample: AttentionSample, cfg: dict,
          variants: list[tuple[str, np.ndarray | None]] | None = None,
          att: Attention | None = None) -> Iterator[View]:
    """Per sink variant, per step pooling in ``cfg['step_pooling']`` (each step for ``each``): every
    head (unless ``per_head`` is false), then each head pooling in ``cfg['head_pooling']`` (steps are
    pooled before heads; both nan-aware, see :func:`pool_maps`). ``first`` is row t*
    (:func:`sample_answer_step`), ``last`` row T − 1. ``variants``: :func:`sink_variants` when the
    caller has them; ``att``: the sample's :class:`Attention` (shared maps are computed once)."""
    renorm, min_share = cfg["renormalize"], cfg["min_vision_share"]
    per_head(cfg)
    att = att or Attention(sample)
    for label, keep in variants if variants is not None else sink_variants(sample, cfg, att):
        share = att.shares(keep)
        for sp in cfg["step_pooling"]:
            if sp == "each":
                for t in range(share.shape[0]):
                    pk, sk, heads = head_views(att.rows(keep, renorm, min_share, t), share[t], cfg)
                    yield View(sp, heads, pk, sk, step=t, sinks=label, keep=keep)
            elif sp == "mean":
                pk, sk, heads = head_views(att.step_mean(keep, renorm, min_share), pool_steps(share, sp), cfg)
                yield View(sp, heads, pk, sk, step=None, sinks=label, keep=keep)
            elif sp in ("first", "last"):
                t = sample_answer_step(sample) if sp == "first" else share.shape[0] - 1
                pk, sk, heads = head_views(att.rows(keep, renorm, min_share, t), share[t], cfg)
                yield View(sp, heads, pk, sk, step=t, sinks=label, keep=keep)
            else:
                raise ValueError(f"unknown step pooling {sp!r} (known: {STEP_POOLS})")


@dataclass
class Steps:
    """Every decode step, heads pooled: ``p [T, L, K, V]``, ``share [T, L, K]``; ``keep [V]`` as in
    :class:`View`."""

    sinks: str
    heads: list[str]
    p: np.ndarray
    share: np.ndarray
    keep: np.ndarray | None = None


def step_views(sample: AttentionSample, cfg: dict, att: Attention | None = None) -> Iterator[Steps]:
    """Per sink variant, all steps unpooled (for per-token metrics); heads as in :func:`views`."""
    per_head(cfg)
    att = att or Attention(sample)
    renorm, min_share = cfg["renormalize"], cfg["min_vision_share"]
    for label, keep in sink_variants(sample, cfg, att):
        share = att.shares(keep)
        out = None
        for t in range(share.shape[0]):  # step by step: the heads of each row pooled as they come
            pk, sk, heads = head_views(att.row(keep, renorm, min_share, t), share[t], cfg)
            if out is None:
                out, out_share = np.empty((share.shape[0], *pk.shape)), np.empty((share.shape[0], *sk.shape))
            out[t], out_share[t] = pk, sk
        yield Steps(label, heads, out, out_share, keep=keep)


# ------------------------------------------------------------------------------------------ regions
def token_areas(sample: AttentionSample) -> np.ndarray:
    """Each vision token's share of the total token area, ``[V]`` (sums to 1)."""
    b = sample.token_boxes.astype(np.float64)
    a = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return a / a.sum() if a.sum() > 0 else np.full(len(a), 1.0 / max(len(a), 1))


def box_mask(sample: AttentionSample, box) -> np.ndarray:
    """Tokens ``[V]`` (bool) whose centre lies in the normalised ``box = (x0, y0, x1, y1)``; if none,
    the token(s) whose box contains the box centre (:func:`centre_mask` of the token boxes)."""
    return centre_mask(sample.token_boxes, sample.image_size, box)


def centre_mask(pixel_boxes: np.ndarray, image_size, box) -> np.ndarray:
    """Cells ``[N]`` (bool) of ``pixel_boxes [N, 4]`` (x0, y0, x1, y1 in pixels of an image of
    ``image_size = (width, height)``) whose centre lies in the normalised ``box = (x0, y0, x1, y1)``
    (half-open, ``x0 ≤ x < x1``); if none, the cell(s) whose box contains the box centre."""
    x0, y0, x1, y1 = box
    w, h = image_size
    b = np.asarray(pixel_boxes).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h  # as AttentionSample.token_centres
    m = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    if m.any():
        return m
    tb = b / np.array([w, h, w, h], np.float64)
    bx, by = (x0 + x1) / 2, (y0 + y1) / 2
    return (tb[:, 0] <= bx) & (bx < tb[:, 2]) & (tb[:, 1] <= by) & (by < tb[:, 3])


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
    and, when ``cfg['objects']``, each ground-truth box."""
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
    for name, box in cfg["regions"].items():
        add(name, "roi", box)
    if cfg["objects"]:
        for name, box in zip(object_names(sample.labels, sample.colours), object_boxes(sample), strict=True):
            add(name, "object", box)
    return out


def quadrant_of(x: float, y: float) -> str:
    """Quadrant name of a point in [0, 1]² (the 0.5 lines belong to the right / bottom halves)."""
    return f"{'top' if y < 0.5 else 'bottom'}_{'left' if x < 0.5 else 'right'}"


# --------------------------------------------------------------------------------------------- grid
def piece_grids(sample: AttentionSample) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Per piece (one per image, or an image's tiles, base and high-resolution grids…), its
    vision-token indices (into ``[V]``) and grid ``(rows, cols)``, row-major. Grid operations
    (neighbourhoods, connected components, hotspots) run on each piece's grid on its own."""
    out, start = [], 0
    for rows, cols in np.asarray(sample.grid).reshape(-1, 2):
        n = int(rows * cols)
        out.append((np.arange(start, start + n), (int(rows), int(cols))))
        start += n
    if start != len(sample.vision_index):
        raise ValueError(f"grids cover {start} tokens but the sample has {len(sample.vision_index)} vision tokens")
    return out


def box_coords(pixel_boxes: np.ndarray) -> np.ndarray:
    """``[N, 2]`` (row, column) coordinates of boxes ``[N, 4]`` of several grids of one image (pieces,
    tiles): each box centre in units of the smallest box of positive size, ``(y_c / h_min, x_c / w_min)``,
    so that distances are in cells of the finest grid."""
    b = np.asarray(pixel_boxes, np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    ok = (w > 0) & (h > 0)
    return np.stack([(b[:, 1] + b[:, 3]) / 2 / h[ok].min(), (b[:, 0] + b[:, 2]) / 2 / w[ok].min()], axis=1)


def tiled(sample: AttentionSample) -> bool:
    """True for a sample of a tiled family (:data:`vlmattn.families.TILED`, from its ``family``
    attribute), or of a layout with several pieces an image or with markers: the samples whose tables
    carry the ``piece`` and ``marker_share`` columns. By family, so that every table of a model has the
    same columns (a Gemma 3 image without crops is one piece, its tables still have them)."""
    from .families import TILED

    return (sample.attrs.get("family") in TILED or sample.n_pieces > sample.n_images
            or len(sample.marker_positions) > 0)


def piece_areas(sample: AttentionSample) -> np.ndarray:
    """Each vision token's share of its piece's total token area, ``[V]`` (sums to 1 over each piece;
    :func:`token_areas` when there is one piece)."""
    b = sample.token_boxes.astype(np.float64)
    a = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    out = np.empty(len(a))
    for idx, _ in piece_grids(sample):
        total = a[idx].sum()
        out[idx] = a[idx] / total if total > 0 else 1.0 / max(len(idx), 1)
    return out


def pixel_density(p: np.ndarray, token_boxes: np.ndarray, image_size, scale: float = 1.0) -> np.ndarray:
    """The map ``p [V]`` as a density over the image's pixels, ``[h, w]`` with ``(w, h)`` =
    ``image_size`` × ``scale`` rounded up: each token's mass spread evenly over its box (pixel boxes
    ``token_boxes [V, 4]``), summed over tokens and pieces,

        D(x, y) = Σ_v p_v · 1[(x, y) ∈ box_v] / |box_v|        (per pixel of the raster)

    so that Σ D · (pixel area) = Σ_v p_v over the boxes that the raster holds. A box is rasterised
    to the pixels whose centres it contains (at least one pixel). NaN entries of ``p`` (an undefined
    map) give an all-NaN density."""
    p = np.asarray(p, np.float64)
    w, h = (int(np.ceil(v * scale)) for v in image_size)
    if not np.isfinite(p).all():
        return np.full((h, w), np.nan)
    b = np.asarray(token_boxes, np.float64).reshape(-1, 4) * scale
    x0 = np.clip(np.round(b[:, 0]), 0, w - 1).astype(np.int64)
    y0 = np.clip(np.round(b[:, 1]), 0, h - 1).astype(np.int64)
    x1 = np.clip(np.maximum(np.round(b[:, 2]), x0 + 1), 1, w).astype(np.int64)
    y1 = np.clip(np.maximum(np.round(b[:, 3]), y0 + 1), 1, h).astype(np.int64)
    value = p / ((x1 - x0) * (y1 - y0))
    diff = np.zeros((h + 1, w + 1))
    np.add.at(diff, (y0, x0), value)
    np.add.at(diff, (y0, x1), -value)
    np.add.at(diff, (y1, x0), -value)
    np.add.at(diff, (y1, x1), value)
    return diff.cumsum(0).cumsum(1)[:h, :w]


def box_overlap(token_boxes: np.ndarray, box) -> np.ndarray:
    """``[V]``: the share of each token's pixel box (``token_boxes [V, 4]``) inside the pixel ``box``
    (x0, y0, x1, y1): ``|box_v ∩ box| / |box_v|``; the mass of a map ``p`` in the box under the pixel
    density (:func:`pixel_density`) is ``Σ_v p_v · box_overlap[v]``."""
    b = np.asarray(token_boxes, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(b[:, 2], box[2]) - np.maximum(b[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(b[:, 3], box[3]) - np.maximum(b[:, 1], box[1]), 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.where(area > 0, ix * iy / np.where(area > 0, area, 1.0), 0.0)


def label_tokens(mask: np.ndarray, sample: AttentionSample, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """Connected components of ``mask [V]`` on each image grid (``scipy.ndimage.label``; 4- or
    8-connected): labels ``[V]`` (0 = outside, 1..n) and n."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels = np.zeros(len(mask), np.int64)
    n = 0
    for idx, shape in piece_grids(sample):
        lab, k = ndimage.label(np.asarray(mask)[idx].reshape(shape), structure=structure)
        labels[idx] = np.where(lab.ravel() > 0, lab.ravel() + n, 0)
        n += k
    return labels, n


def local_maxima(p: np.ndarray, sample: AttentionSample, size: int = 3) -> np.ndarray:
    """Tokens ``[V]`` equal to the maximum of their ``size × size`` grid neighbourhood
    (``scipy.ndimage.maximum_filter``, outside the image counts as −∞)."""
    from scipy import ndimage

    out = np.zeros(len(p), bool)
    for idx, shape in piece_grids(sample):
        g = np.asarray(p, np.float64)[idx].reshape(shape)
        out[idx] = (g == ndimage.maximum_filter(g, size=size, mode="constant", cval=-np.inf)).ravel()
    return out


def top_mass_mask(p: np.ndarray, q: float) -> np.ndarray:
    """Over the last axis: the fewest tokens whose largest weights reach ``q`` of the total (ties
    broken by token order), as a bool mask of p's shape; empty for an undefined (NaN) map."""
    return top_mass_masks(p, [q])[0]


def top_mass_masks(p: np.ndarray, qs: Sequence[float]) -> list[np.ndarray]:
    """:func:`top_mass_mask` of ``p`` for each level in ``qs``, from one sort."""
    order = np.argsort(-p, axis=-1, kind="stable")
    c = np.cumsum(np.take_along_axis(p, order, -1), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(p.shape[-1]), -1)
    ok = defined(p)[..., None]
    out = []
    for q in qs:
        # relative slack of a few ulps so that exact ties (e.g. 5 × 0.1 vs 0.5) count as reached
        n = (c >= q * c[..., -1:] * (1 - 1e-12)).argmax(-1) + 1
        out.append((ranks < n[..., None]) & ok)
    return out


def count_components(masks: np.ndarray, sample: AttentionSample, connectivity: int = 4) -> np.ndarray:
    """``[M]``: the number of connected components of each mask of ``masks [M, V]`` on the image grids
    (:func:`label_tokens`'s n), labelled as one stack (a structure that does not connect masks)."""
    from scipy import ndimage

    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    n_masks = len(masks)
    out = np.zeros(n_masks, np.int64)
    for idx, shape in piece_grids(sample):
        lab, n = ndimage.label(np.asarray(masks)[:, idx].reshape(n_masks, *shape), structure=plane)
        lab = lab.reshape(n_masks, len(idx))
        owner = np.zeros(n + 1, np.int64)
        rows, _ = np.nonzero(lab)
        owner[lab[lab > 0]] = rows
        out += np.bincount(owner[1:], minlength=n_masks)
    return out


def hull_areas(masks: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[M]``: area of the convex hull of ``points [V, 2]`` (x, y) where each of ``masks [M, V]`` is
    set (0 for fewer than 3 distinct points or collinear ones), all masks at once: per distinct y only
    the leftmost and rightmost point can be a vertex; Andrew's monotone chain over the y levels builds
    the left and right chains of every mask together and the shoelace formula gives the area."""
    masks = np.asarray(masks, bool)
    n_masks = len(masks)
    x, y = np.asarray(points, np.float64)[:, 0], np.asarray(points, np.float64)[:, 1]
    ys, level = np.unique(y, return_inverse=True)
    order = np.argsort(level, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(level[order]) > 0])
    m = masks[:, order]
    xo = x[order]
    left = np.minimum.reduceat(np.where(m, xo, np.inf), starts, axis=1)  # [M, n_y]
    right = np.maximum.reduceat(np.where(m, xo, -np.inf), starts, axis=1)
    has = np.isfinite(left)
    rows = np.arange(n_masks)

    def chain(w: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        su = np.zeros(w.shape)  # stacks of (y, x) per mask
        sw = np.zeros(w.shape)
        n = np.zeros(n_masks, np.int64)
        for i in range(w.shape[1]):
            u, live = ys[i], has[:, i]
            wi = np.where(live, w[:, i], 0.0)
            while True:
                pop = live & (n >= 2)
                if not pop.any():
                    break
                a, b = np.maximum(n - 2, 0), np.maximum(n - 1, 0)
                cross = ((su[rows, b] - su[rows, a]) * (wi - sw[rows, a])
                         - (sw[rows, b] - sw[rows, a]) * (u - su[rows, a]))
                pop &= sign * cross <= 0
                if not pop.any():
                    break
                n -= pop
            su[rows[live], n[live]] = u
            sw[rows[live], n[live]] = wi[live]
            n += live
        return su, sw, n

    lu, lw, ln = chain(left, 1.0)  # counter-clockwise turns (y as abscissa)
    ru, rw, rn = chain(right, -1.0)
    # polygon: the left chain, then the right chain backwards; shoelace in (y, x)
    width = ln + rn
    pu = np.zeros((n_masks, max(int(width.max(initial=0)), 1)))
    pw = np.zeros_like(pu)
    col = np.arange(pu.shape[1])
    in_left = col[None, :] < ln[:, None]
    back = np.clip(width[:, None] - 1 - col[None, :], 0, pu.shape[1] - 1)  # right chain index, reversed
    ri = np.clip(back, 0, ru.shape[1] - 1)
    li = np.clip(col[None, :].repeat(n_masks, 0), 0, lu.shape[1] - 1)
    pu = np.where(in_left, np.take_along_axis(lu, li, 1), np.take_along_axis(ru, ri, 1))
    pw = np.where(in_left, np.take_along_axis(lw, li, 1), np.take_along_axis(rw, ri, 1))
    valid = col[None, :] < width[:, None]
    nxt = np.where(col[None, :] + 1 < width[:, None], col[None, :] + 1, 0)
    pu_n, pw_n = np.take_along_axis(pu, nxt, 1), np.take_along_axis(pw, nxt, 1)
    area = 0.5 * np.abs(np.where(valid, pu * pw_n - pu_n * pw, 0.0).sum(1))
    return area

def moments(p: np.ndarray, centres: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Mass and first/second moments of ``p [..., V]`` restricted to ``mask [V]`` (centres ``[V, 2]``)."""
    q = p * mask
    m = q.sum(-1)
    safe = np.where(m > 0, m, np.nan)
    out = {"mass": m}
    for axis, name in ((0, "x"), (1, "y")):
        c = centres[:, axis]
        mu = (q * c).sum(-1) / safe
        out[f"com_{name}"] = mu
        out[f"var_{name}"] = (q * (c - mu[..., None]) ** 2).sum(-1) / safe
    return out


def pointing(p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1 where the argmax over the last axis of ``p [..., V]`` falls in ``mask [V]``, one value per map
    in C order (nullable ``Int64``; missing for an undefined map)."""
    return int_column(mask[np.nan_to_num(p, nan=0.0).argmax(-1)], defined(p))


def energy(p: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``Σ_{v∈mask} p_v / Σ_v p_v``: the share of each map of ``p [..., V]`` inside ``mask [V]``
    (``[...]``, NaN for a map with no mass)."""
    total = p.sum(-1)
    return (p * mask).sum(-1) / np.where(total > 0, total, np.nan)
