"""Offline evaluation of pruning scores on cached samples: which tokens a scorer would keep, measured
against the ground-truth objects and the unpruned model's own attention, without running the model.

For a sample with V vision tokens, a score ``s [V]`` and a budget k, the kept set is
``S = keep_indices(s, k)`` (:func:`vlmattn.pruning.scorers.keep_indices`). With the object tokens
``O`` (the union over ``/image/boxes`` of :func:`vlmattn.maps.box_mask`: tokens whose centre
lies in a box, or the token under a small box's centre):

    recall    = |S ∩ O| / |O|                      (NaN when the sample has no object token)
    chance    = k / V                              (the expected recall of a uniformly random S)

and with the reference attention of the answer step t (decode row t, the row that predicts the t-th
generated token; t = 0 is the first answer token), averaged over the heads and over the layers that run
without the dropped tokens, K … L − 1 for pruning at layer K (all layers for K = 0, pruning before the
language model):

    ref[v]    = 1 / ((L − K)·H) · Σ_{l=K}^{L−1} Σ_h decode[t, l, h, vision_index[v]]
    retained  = Σ_{v ∈ S} ref[v] / Σ_v ref[v]      (NaN when ref has no mass)

— the share of the full model's attention on the image that the kept tokens would still receive.

Budgets: ``scaled_budgets`` turns the standard LLaVA-1.5 budgets (192 / 128 / 64 of 576) into counts
for the model's V; ``ratio_budgets`` turns kept fractions into counts; ``kept_count`` reads a count
as the tokens kept from layer K on (``kept``) or as the layer-averaged count (``layer_averaged``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ..maps import box_mask, object_boxes
from ..store import AttentionSample
from . import scorers as sc

LLAVA_VISION_TOKENS = 576
LLAVA_BUDGETS = (192, 128, 64)
COLUMNS = ["scorer", "budget", "n_vision", "recall", "chance", "retained_mass"]


# ------------------------------------------------------------------------------------------ budgets
def scaled_budgets(n_vision: int, *, budgets: Iterable[int] = LLAVA_BUDGETS,
                   reference_tokens: int = LLAVA_VISION_TOKENS) -> np.ndarray:
    """Kept counts ``[B]``: ``round(V · b / reference_tokens)`` (half up) per budget b, at least 1 and at
    most V; 192 / 128 / 64 of 576 by default (LLaVA-1.5's 66.7 / 77.8 / 88.9 % reductions)."""
    b = np.asarray(list(budgets), np.float64)
    if (b < 0).any() or (b > reference_tokens).any():
        raise ValueError(f"budgets must lie in 0 … {reference_tokens}, got {b.tolist()}")
    return np.clip(np.floor(n_vision * b / reference_tokens + 0.5), 1, n_vision).astype(np.int64)


def model_budgets(n_vision: int, *, budgets: Iterable[int], keep_ratios: Iterable[float], convention: str,
                  n_layers: int, prune_layer: int) -> np.ndarray:
    """The kept counts ``[B]`` of one model, largest first, without repeats: the budgets T of
    :func:`scaled_budgets` (``budgets``, counts of LLaVA-1.5's 576) and :func:`ratio_budgets`
    (``keep_ratios``), each at least 1, read under ``convention`` (:func:`kept_count`) for a model of
    ``n_layers`` decoder layers pruned at ``prune_layer``."""
    targets = np.concatenate([scaled_budgets(n_vision, budgets=budgets),
                              np.maximum(ratio_budgets(n_vision, keep_ratios=keep_ratios), 1)])
    counts = [kept_count(int(t), n_vision, convention=convention, n_layers=n_layers, prune_layer=prune_layer)
              for t in targets]
    return np.unique(np.asarray(counts, np.int64))[::-1].copy()


BUDGET_CONVENTIONS = ("kept", "layer_averaged")


def kept_count(target: int, n_vision: int, *, convention: str, n_layers: int, prune_layer: int) -> int:
    """The vision tokens R kept from layer K = ``prune_layer`` on for a budget T = ``target``:
    ``kept``: R = T; ``layer_averaged``: T is the vision-token count averaged over the L = ``n_layers``
    decoder layers, K layers with all V and L − K with R, so R = round((L·T − K·V) / (L − K)) (half
    up; LLaVA-FinePruner-Head's 166 / 98 / 30 for 192 / 128 / 64 on LLaVA-1.5-7B, L = 32, K = 2,
    V = 576). Raises ValueError when that R is below 1 (T < (K·V + (L − K)/2) / L) or K is not in 0 … L − 1."""
    if convention not in BUDGET_CONVENTIONS:
        raise ValueError(f"unknown budget convention {convention!r} (known: {', '.join(BUDGET_CONVENTIONS)})")
    if convention == "kept":
        return int(target)
    if not 0 <= prune_layer < n_layers:
        raise ValueError(f"prune_layer must lie in 0 … {n_layers - 1} (the decoder layers), got {prune_layer}")
    kept = math.floor((n_layers * target - prune_layer * n_vision) / (n_layers - prune_layer) + 0.5)
    if kept < 1:
        raise ValueError(f"a layer-averaged budget of {target} of {n_vision} vision tokens keeps {kept} from layer "
                         f"{prune_layer} of {n_layers} on: it needs at least "
                         f"{math.ceil((prune_layer * n_vision + (n_layers - prune_layer) / 2) / n_layers)}")
    return int(min(kept, n_vision))


def average_tokens(kept: int, n_vision: int, *, n_layers: int, prune_layer: int) -> float:
    """The vision tokens per decoder layer averaged over the L layers when R = ``kept`` are kept from
    layer K on: (K·V + (L − K)·R) / L — the count in-LLM pruning methods report as their budget."""
    return (prune_layer * n_vision + (n_layers - prune_layer) * kept) / n_layers


def ratio_budgets(n_vision: int, *, keep_ratios: Iterable[float]) -> np.ndarray:
    """Kept counts ``[B]``: ``round(V · ρ)`` (half up) per kept fraction ρ ∈ [0, 1] (FastV's R drops 1 − ρ)."""
    r = np.asarray(list(keep_ratios), np.float64)
    if ((r < 0) | (r > 1)).any():
        raise ValueError(f"keep_ratios must lie in [0, 1], got {r.tolist()}")
    return np.floor(n_vision * r + 0.5).astype(np.int64)


# ---------------------------------------------------------------------------------------- measures
def object_mask(sample: AttentionSample) -> np.ndarray:
    """Object tokens ``[V]`` (bool): the union of :func:`box_mask` over the sample's ground-truth boxes."""
    mask = np.zeros(len(sample.vision_index), bool)
    for box in object_boxes(sample):
        mask |= box_mask(sample, box)
    return mask


def object_recall(keep: np.ndarray, objects: np.ndarray) -> float:
    """``|keep ∩ O| / |O|`` for kept indices ``keep [k]`` and the object mask ``objects [V]``; NaN without objects."""
    objects = np.asarray(objects, bool)
    n = int(objects.sum())
    return float(objects[np.asarray(keep, np.int64)].sum() / n) if n else float("nan")


def reference_attention(sample: AttentionSample, *, prune_layer: int, step: int) -> np.ndarray:
    """``ref [V]``: decode row ``step``'s attention on the vision tokens, averaged over the heads and the
    layers K … L − 1 (K = ``prune_layer``, 0 ≤ K < L) — the layers that run without dropped tokens."""
    n_steps, n_layers = sample.n_steps, sample.n_layers
    if not 0 <= step < n_steps:
        raise ValueError(f"step must lie in 0 … {n_steps - 1} (the decode steps), got {step}")
    if not 0 <= prune_layer < n_layers:
        raise ValueError(f"prune_layer must lie in 0 … {n_layers - 1} (the decoder layers), got {prune_layer}")
    rows = sample.decode_vision[step, prune_layer:].astype(np.float64)
    return rows.mean((0, 1))


def retained_mass(keep: np.ndarray, reference: np.ndarray) -> float:
    """``Σ_{v ∈ keep} ref[v] / Σ_v ref[v]``; NaN when the reference has no mass."""
    ref = np.asarray(reference, np.float64)
    total = ref.sum()
    return float(ref[np.asarray(keep, np.int64)].sum() / total) if total > 0 else float("nan")


# ---------------------------------------------------------------------------------------- scorers
def scoring_prefill(sample: AttentionSample, *, layers: Iterable[int]) -> np.ndarray:
    """The sample's prefill rows as ``[L, H, R, N]`` float32 for the scorers, whichever decoder layers
    the file stores (``extraction.prefill_layers``, ``sample.prefill_layers``): stored layers in place,
    NaN in the others. Raises ValueError naming the option when one of ``layers`` is not stored."""
    n_layers = sample.n_layers
    stored = np.asarray(sample.stored_prefill_layers, np.int64)
    missing = sorted(set(int(x) for x in layers) - set(stored.tolist()))
    if missing:
        raise ValueError(f"the sample stores prefill rows at decoder layers {stored.tolist()}, not {missing}: "
                         "add them to extraction.prefill_layers")
    if len(stored) == n_layers:
        return np.asarray(sample.prefill, np.float32)
    out = np.full((n_layers, *sample.prefill.shape[1:]), np.nan, np.float32)
    out[stored] = sample.prefill
    return out


def available_queries(sample: AttentionSample) -> list[str]:
    """The query strategies whose prefill rows the sample stores (see ``extraction.prefill_rows``)."""
    out = []
    for q in sc.QUERY_STRATEGIES:
        try:
            sc.query_weights(q, sample.prefill_positions, sample.image_positions, sample.prefill.shape[-1],
                             row_mass=np.zeros(len(sample.prefill_positions)))
        except ValueError:
            continue
        out.append(q)
    return out


def sample_scores(sample: AttentionSample, *, prune_layer: int, head_strategies: Iterable[str],
                  query_strategies: Iterable[str], fixed_query: str, fixed_head: str, n_heads: int, top_k: int,
                  seed: int, n_draws: int, encoder_layer: int = -2) -> dict[str, np.ndarray]:
    """Scores ``name → [V]`` of one sample for pruning at layer ``prune_layer``:

    * ``fastv``, ``pyramiddrop`` (:mod:`.scorers`; pyramiddrop with its own layer convention, at the
      same K), and ``fastervlm`` / ``visionzip_dominant`` when the sample holds a vision encoder with a
      CLS token (encoder layer ``encoder_layer``);
    * ``head:<strategy>`` per head strategy with the ``fixed_query`` rows (the head-selection ablation;
      FastV's rows with ``last_token``);
    * ``query:<strategy>`` per query strategy with the ``fixed_head`` selection (the query ablation);
    * ``random:<d>`` for draws d = 0 … n_draws − 1 of :func:`.scorers.random_scores` with ``seed``.

    Pooling depends on the budget and is added by :func:`offline_table`. Raises ValueError (naming
    ``extraction.prefill_rows`` or ``extraction.prefill_layers``) when a requested strategy's rows or
    layers are not stored.
    """
    pos, vis, img = sample.prefill_positions, sample.vision_index, sample.image_positions
    n_layers = sample.n_layers
    prefill = scoring_prefill(sample, layers=[prune_layer - 1, *([prune_layer] if prune_layer < n_layers else [])])
    out = {"fastv": sc.fastv(prefill, pos, vis, prune_layer=prune_layer)}
    if prune_layer < n_layers:
        out["pyramiddrop"] = sc.pyramiddrop(prefill, pos, vis, prune_layer=prune_layer)
    ve = sample.vision_encoder
    if ve is not None and ve.has_cls:
        out["fastervlm"] = sc.fastervlm(ve.cls_attention, ve.patch_token, len(vis), layer=encoder_layer)
        out["visionzip_dominant"] = sc.visionzip_dominant(ve.cls_attention, ve.patch_token, len(vis),
                                                          layer=encoder_layer)
    common = dict(prune_layer=prune_layer, n_heads=n_heads, top_k=top_k)
    for h in head_strategies:
        out[f"head:{h}"] = sc.attention_scores(prefill, pos, vis, img, query=fixed_query, head=h, **common)
    for q in query_strategies:
        out[f"query:{q}"] = sc.attention_scores(prefill, pos, vis, img, query=q, head=fixed_head, **common)
    for d in range(n_draws):
        out[f"random:{d}"] = sc.random_scores(len(vis), seed=seed, draw=d)
    return out


def offline_table(sample: AttentionSample, scores: Mapping[str, np.ndarray], budgets: Iterable[int], *,
                  prune_layer: int, step: int, pooling: bool) -> pd.DataFrame:
    """One row per (scorer, budget): ``scorer, budget, n_vision, recall, chance, retained_mass`` (module
    docstring), the reference attention of decode step ``step`` over layers ``prune_layer`` … L − 1.
    With ``pooling`` the budget-dependent ``pooling`` scorer (:func:`.scorers.pooling_scores` on the
    sample's grids) is added."""
    n_vis = len(sample.vision_index)
    objects = object_mask(sample)
    ref = reference_attention(sample, prune_layer=prune_layer, step=step)
    rows = []
    for k in budgets:
        k = int(k)
        named = dict(scores)
        if pooling:
            named["pooling"] = sc.pooling_scores(sample.grid, k)
        for name, s in named.items():
            if len(s) != n_vis:
                raise ValueError(f"score {name!r} has {len(s)} values for {n_vis} vision tokens")
            keep = sc.keep_indices(s, k)
            rows.append((name, k, n_vis, object_recall(keep, objects), k / n_vis if n_vis else float("nan"),
                         retained_mass(keep, ref)))
    return pd.DataFrame(rows, columns=COLUMNS)


SUMMARY_COLUMNS = ["scorer", "budget", "n_vision", "kept", "n_samples", "recall", "recall_ci_low", "recall_ci_high",
                   "retained_mass", "retained_ci_low", "retained_ci_high", "chance"]


def _mean_interval(x: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean of the finite values and its Student-t interval ``x̄ ± t_{n−1} · s / √n`` (NaN below 2 values)."""
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return np.nan, np.nan, np.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, np.nan, np.nan
    from scipy import stats

    sem = stats.sem(x)
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def offline_summary(rows: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per (scorer, budget, n_vision) of the per-sample ``rows`` (:func:`offline_table`, any extra
    columns ignored): the mean object recall and retained mass over the samples (NaN recalls of samples
    without objects left out) with Student-t intervals at ``confidence``, ``kept`` = budget / V and the
    mean chance recall. Random draws ``random:<d>`` are pooled into one scorer ``random`` (each
    sample's mean over its draws). Rows sorted by budget (descending), then mean recall (descending)."""
    rows = rows.copy()
    is_random = rows["scorer"].str.startswith("random:")
    keys = [c for c in ("model", "image", "question") if c in rows.columns]
    pooled = (rows[is_random].groupby([*keys, "budget", "n_vision"], sort=False)
              [["recall", "chance", "retained_mass"]].mean().reset_index().assign(scorer="random"))
    rows = pd.concat([rows[~is_random], pooled], ignore_index=True)
    out = []
    for (scorer, budget, n_vision), g in rows.groupby(["scorer", "budget", "n_vision"], sort=False):
        recall = _mean_interval(g["recall"].to_numpy(np.float64), confidence)
        kept_mass = _mean_interval(g["retained_mass"].to_numpy(np.float64), confidence)
        out.append((scorer, int(budget), int(n_vision), budget / n_vision, len(g), *recall, *kept_mass,
                    float(g["chance"].mean())))
    table = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    return table.sort_values(["budget", "recall", "scorer"], ascending=[False, False, True]).reset_index(drop=True)
