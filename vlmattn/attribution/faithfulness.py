"""Deletion and insertion curves: which map's top vision tokens does the answer depend on.

A map ``m [V]`` orders the vision tokens, most important first (``argsort(−m)``, ties in index order).
For ``k`` tokens (``0 ≤ k ≤ V``):

    deletion:   p_del(k) = P(y | the image without its top-k tokens)      (falls fast for a faithful map)
    insertion:  p_ins(k) = P(y | the image with only its top-k tokens)    (rises fast for a faithful map)

``y`` is the answer token of the model with every token. The tokens are removed by the pruning harness
(:func:`vlmattn.engine.pruned.generate_pruned`: dropped from the sequence before decoder layer 0, the
other tokens keeping their positions), and ``P(y | ·)`` is the softmax of the first generated step's
logits. Both curves share their ends (``p_del(0) = p_ins(V)``: every token; ``p_del(V) = p_ins(0)``:
none), computed once. The area under a curve over the fraction ``k / V`` (trapezoidal,
``sklearn.metrics.auc``) summarises it: the lower the deletion area and the higher the insertion area,
the more faithful the map; ``insertion − deletion`` combines them. A random order is the floor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

CURVES = ("deletion", "insertion")
#: the summaries ranked per model: the two areas and their difference, and which way is better
SCORES = {"deletion": "lower", "insertion": "higher", "insertion_minus_deletion": "higher"}
CURVE_COLUMNS = ["map", "curve", "k", "fraction", "probability"]
RANK_COLUMNS = ["score", "map", "n", "mean", "ci_low", "ci_high", "rank", "vs_random", "vs_random_low",
                "vs_random_high"]


def token_counts(n_tokens: int, fractions) -> np.ndarray:
    """The ``k`` of the curves, ``[K]`` int64 sorted and distinct: ``round(f · V)`` of ``fractions`` (each in
    ``(0, 1)``), with 0 and ``V`` added."""
    f = np.asarray(fractions, np.float64)
    if f.size and ((f <= 0) | (f >= 1)).any():
        raise ValueError(f"fractions must lie strictly between 0 and 1, got {f.tolist()}")
    return np.unique(np.concatenate([[0, n_tokens], np.rint(f * n_tokens)]).astype(np.int64))


def ranking_order(m: np.ndarray) -> np.ndarray:
    """Vision-token indices ``[V]``, the highest score first (ties in index order). Raises ValueError for NaN."""
    m = np.asarray(m, np.float64)
    if np.isnan(m).any():
        raise ValueError("a map with NaN scores cannot order the tokens")
    return np.argsort(-m, kind="stable")


def kept_tokens(order: np.ndarray, k: int, curve: str) -> np.ndarray:
    """The token indices kept at ``k``, sorted: all but ``order[:k]`` (deletion) or ``order[:k]`` (insertion)."""
    if curve == "deletion":
        return np.sort(order[k:])
    if curve == "insertion":
        return np.sort(order[:k])
    raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")


def sample_rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    """A generator fixed by ``seed``, the sample ``name`` and what it draws (``purpose``)."""
    digest = hashlib.sha256(f"{seed}:{name}:{purpose}".encode()).digest()[:8]
    return np.random.default_rng(int.from_bytes(digest, "little"))


def random_map(n_tokens: int, seed: int, name: str) -> np.ndarray:
    """A random order's map ``[V]`` (a permutation of ``1 … V``), fixed by ``seed`` and the sample ``name``."""
    return sample_rng(seed, name, "random map").permutation(n_tokens).astype(np.float64) + 1


def curves(probability: Callable[[np.ndarray], float], maps: Mapping[str, np.ndarray], ks: np.ndarray
           ) -> pd.DataFrame:
    """Deletion and insertion curves of every map: rows :data:`CURVE_COLUMNS` (``map`` in the order of
    ``maps``, then ``curve``, then ``k``). ``probability(keep)`` is ``P(y | only the tokens keep [k], sorted)``;
    ``maps`` name → ``[V]``; ``ks`` as :func:`token_counts` gives them (0 and ``V`` included)."""
    ks = np.asarray(ks, np.int64)
    n_tokens = int(ks.max())
    ends = {0: float(probability(np.zeros(0, np.int64))), n_tokens: float(probability(np.arange(n_tokens)))}
    rows = []
    for name, m in maps.items():
        if len(m) != n_tokens:
            raise ValueError(f"map {name!r} scores {len(m)} tokens, the curves run over {n_tokens}")
        order = ranking_order(m)
        for curve in CURVES:
            for k in ks:
                kept = kept_tokens(order, int(k), curve)
                p = ends.get(len(kept))
                rows.append((name, curve, int(k), k / n_tokens, float(probability(kept)) if p is None else p))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def areas(curve_rows: pd.DataFrame) -> pd.DataFrame:
    """Area under each curve over ``fraction`` (``sklearn.metrics.auc``): the grouping columns of
    ``curve_rows`` other than :data:`CURVE_COLUMNS` (such as the sample), then ``map``, with one column
    per curve and ``insertion_minus_deletion``."""
    from sklearn.metrics import auc

    keys = [c for c in curve_rows.columns if c not in CURVE_COLUMNS] + ["map"]
    out = (curve_rows.groupby([*keys, "curve"], sort=False)
           .apply(lambda g: auc(g["fraction"].to_numpy(), g["probability"].to_numpy()), include_groups=False)
           .unstack("curve").reset_index())
    out.columns.name = None
    out["insertion_minus_deletion"] = out["insertion"] - out["deletion"]
    return out[[*keys, *SCORES]]


def _interval(values: np.ndarray, n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (``scipy.stats.bootstrap``); NaN for fewer than 2 values
    and the value itself where they are all equal."""
    from scipy.stats import bootstrap

    if len(values) < 2:
        return np.nan, np.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    ci = bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                   method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def ranking(sample_areas: pd.DataFrame, *, n_resamples: int, confidence: float, seed: int,
            floor: str = "random") -> pd.DataFrame:
    """The maps ranked per score of :data:`SCORES` over samples: rows :data:`RANK_COLUMNS`.

    ``sample_areas``: one row per (sample, map) with a column per score (:func:`areas`; the sample is every
    column but ``map`` and the scores). ``mean`` is the mean over samples with a percentile bootstrap
    interval at ``confidence`` (``n_resamples``, seeded); ``rank`` 1 is the most faithful map (lowest mean
    deletion area, highest insertion and difference); ``vs_random`` is the mean paired difference from the
    ``floor`` map on the same samples, with its bootstrap interval (NaN without that map).
    """
    keys = [c for c in sample_areas.columns if c not in ("map", *SCORES)]
    if not keys:
        raise ValueError("sample_areas needs the sample columns besides map and the scores")
    rows = []
    for score, better in SCORES.items():
        wide = sample_areas.pivot_table(index=keys, columns="map", values=score, sort=True)
        means = wide.mean()
        order = means.sort_values(ascending=better == "lower", kind="stable")
        for rank, name in enumerate(order.index, start=1):
            values = wide[name].dropna().to_numpy()
            low, high = _interval(values, n_resamples, confidence, seed)
            if floor in wide and name != floor:
                diff = (wide[name] - wide[floor]).dropna().to_numpy()
                d_low, d_high = _interval(diff, n_resamples, confidence, seed)
                d = float(diff.mean())
            else:
                d = d_low = d_high = np.nan
            rows.append((score, name, len(values), float(means[name]), low, high, rank, d, d_low, d_high))
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def harness_probability(lm, image, question: str, target: int) -> Callable[[np.ndarray], float]:
    """``probability(keep)`` of the answer token id ``target`` for ``image`` and ``question`` with only the
    vision tokens ``keep`` (indices into the adapter's layout) entering the language model: one pruned
    step of :func:`vlmattn.engine.pruned.generate_pruned` (drop before layer 0, positions kept)."""
    from scipy.special import softmax

    from ..engine.pruned import generate_pruned

    def probability(keep: np.ndarray) -> float:
        r = generate_pruned(lm, image, question, keep=np.asarray(keep, np.int64), layer=0, mode="drop",
                            positions="keep", max_new_tokens=1)
        return float(softmax(r.first_logits.astype(np.float64))[int(target)])

    return probability
