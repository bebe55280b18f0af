"""Causal check of ranked heads: does ablating the top-k heads of a contrast lower the probability of
the expected answer more than ablating k heads drawn at random?

For an item ``i`` = (image, question, answer token ``y_i``) of condition A and a set ``S`` of query
heads ``(layer, head)`` of the language model,

    logp_S(i) = log softmax(z_S(i))[y_i]

where ``z_S(i)`` are the next-token logits at the last prompt position (the logits of the reply's
first token), from one forward pass over the prompt with the heads of ``S`` ablated
(:class:`vlmattn.engine.capture.HeadAblation`: ``"zero"`` sets a head's output to 0, ``"mean"`` to its mean
over the prompt positions); ``logp_∅`` is the unablated model. Over ``I`` items the effect of ``S`` is

    Δ(S) = (1/I) Σ_i [logp_S(i) − logp_∅(i)]          (< 0: ablating S lowers the answer's probability)

For each ``k`` of ``ks``: ``Δ_top(k) = Δ(first k ranked heads)`` and ``Δ_r(k)``, ``r = 1 … R``, for
``R = n_random`` random sets of ``k`` heads (one ``numpy.random.default_rng(seed)``; sets drawn for the
``ks`` in their order, draw by draw), by ``draw``:

* ``ranked``: ``k`` of the ranked heads, uniformly without replacement: the heads the ranking could
  have chosen. A head contrast ranks only heads with a defined map; a head that puts no attention on
  the image can still matter to the answer through the text, and a null that holds it measures that,
  not whether the ranking found the heads that matter;
* ``layer_matched``: for the top-k set's layer multiset ``{l: c_l}`` (``c_l`` of its heads in layer
  l), ``c_l`` ranked heads of layer l, uniformly without replacement within each layer: the null of
  "the same layers, other heads";
* ``all``: ``k`` of all ``L·H`` heads (the null of a ranking over every head).

Then, ties counted half (a random set equal to the top set, as the top head itself is for ``k = 1``,
neither beats it nor is beaten),

    percentile(k) = 100 · (#{r : Δ_r(k) < Δ_top(k)} + ½ #{r : Δ_r(k) = Δ_top(k)}) / R

is small when the top heads hurt the answer more than random sets of the same size: below 5, the
top set's effect lies beyond the null's 5th percentile. Its resolution is 100 / R points, so R of
100 or more (the schema's default is 200) is needed for that reading. Beside the sets, the
single-head effects ``Δ({h})`` of each of the first ``max(ks)`` ranked heads alone say whether the
effect of a set comes from one head.

Every distinct head set is evaluated once (``I`` forward passes) and reused wherever it recurs (the
top set, random draws, single heads), so the cost is ``I · (1 + #distinct sets)`` forward passes,
at most ``I · (1 + len(ks) · (1 + R) + max(ks))``.
"""

from __future__ import annotations

import numbers
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..engine.capture import ABLATION_MODES, HeadAblation, ablating
from ..engine.inference import LoadedModel, model_inputs
from ..progress import progress

SUMMARY_COLUMNS = ["k", "heads", "delta_logprob", "random_mean", "random_q05", "random_q95", "percentile",
                   "n_random", "draw", "n_items", "mode"]
DRAW_COLUMNS = ["k", "draw", "heads", "delta_logprob"]
SINGLE_COLUMNS = ["rank", "layer", "head", "delta_logprob", "n_items", "mode"]
#: How the random head sets are drawn (``draw``, see the module docstring).
DRAWS = ("ranked", "layer_matched", "all")


def random_sets(ranked: Sequence[tuple[int, int]], ks: Sequence[int], *, n_random: int, draw: str,
                n_layers: int, n_heads: int, seed: int) -> dict[int, list[list[tuple[int, int]]]]:
    """Random head sets of the causal check's null (module docstring).

    Parameters
    ----------
    ranked : sequence of (layer, head)
        The ranked heads, best first (distinct).
    ks : sequence of int
        Set sizes, each at most the size of the pool ``draw`` draws from.
    n_random : int ≥ 0
        Sets R per k.
    draw : {"ranked", "layer_matched", "all"}
        The pool (:data:`DRAWS`): the ranked heads; the ranked heads of each layer of the top-k
        set, as many as it has there; or all ``n_layers · n_heads`` heads.
    n_layers, n_heads : int
        The language model's layers L and query heads per layer H.
    seed : int
        Seed of the one ``numpy.random.default_rng`` (the ks in their order, draw by draw, layers in
        ascending order within a layer-matched draw).

    Returns
    -------
    dict ``{k: [set_1, …, set_R]}``, each set a sorted list of k distinct ``(layer, head)``. The
    ``ranked`` pool is in ranking order, the layer-matched pools in (layer, head) order within each
    layer and the ``all`` pool in (layer, head) order.
    """
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {', '.join(DRAWS)}; got {draw!r}")
    ranked = [(int(layer), int(head)) for layer, head in ranked]
    pool = ranked if draw != "all" else [(lay, h) for lay in range(n_layers) for h in range(n_heads)]
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for h in sorted(ranked):
        by_layer.setdefault(h[0], []).append(h)
    rng = np.random.default_rng(seed)
    out = {}
    for k in ks:
        if draw == "layer_matched":
            counts = Counter(layer for layer, _ in ranked[:k])
        elif k > len(pool):
            raise ValueError(f"k = {k} exceeds the {len(pool)} heads draw {draw!r} draws from")
        sets = []
        for _ in range(n_random):
            if draw == "layer_matched":
                chosen = [h for layer in sorted(counts)
                          for h in (by_layer[layer][i] for i in rng.choice(len(by_layer[layer]), size=counts[layer],
                                                                           replace=False))]
            else:
                chosen = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
            sets.append(sorted(chosen))
        out[k] = sets
    return out


def percentile(top: float, null) -> float:
    """``100 · (#{r: null_r < top} + ½ #{r: null_r = top}) / R`` of the R values ``null [R]``: where
    ``top`` falls in the null, ties counted half (NaN for R = 0)."""
    null = np.asarray(null, np.float64).reshape(-1)
    if null.size == 0:
        return float("nan")
    return 100.0 * (np.count_nonzero(null < top) + 0.5 * np.count_nonzero(null == top)) / null.size


def answer_token_id(lm: LoadedModel, answer: str) -> int:
    """Id of the first token of ``answer`` as the model's reply starts with it.

    The chat template is rendered with and without the assistant's turn ``answer`` (the messages of
    the family's adapter; the image stays one placeholder token); the first token after the
    generation prompt's tokens is the answer's. Raises ValueError when ``answer`` is empty or its
    tokens do not continue the generation prompt's tokens (the two renderings tokenize differently).
    """
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"answer must be a non-empty string, got {answer!r}")
    question = "?"
    tok = lm.processor.tokenizer
    prompt = lm.adapter.chat_prompt(lm.processor, question)
    full = lm.adapter.chat_prompt(lm.processor, question, answer)
    p_ids = tok(prompt, add_special_tokens=False).input_ids
    f_ids = tok(full, add_special_tokens=False).input_ids
    if len(f_ids) <= len(p_ids) or f_ids[: len(p_ids)] != p_ids:
        raise ValueError(f"answer {answer!r}: the model's chat template with this reply does not continue the "
                         "tokens of its generation prompt")
    return int(f_ids[len(p_ids)])


@torch.no_grad()
def _logprob(lm: LoadedModel, inputs, token_id: int, ablation: HeadAblation | None) -> float:
    with ablating(ablation):
        logits = lm.model(**inputs, use_cache=False, logits_to_keep=1).logits[0, -1]
    if not 0 <= token_id < logits.shape[-1]:
        raise ValueError(f"token id {token_id} is outside the vocabulary of {logits.shape[-1]} logits")
    return float(torch.log_softmax(logits.float(), dim=-1)[token_id])


def answer_logprob(lm: LoadedModel, image, question: str, token_id: int,
                   ablation: HeadAblation | None = None) -> float:
    """``log softmax(z)[token_id]`` of the next-token logits ``z`` at the last prompt position, from one
    forward pass (no generation) with ``ablation`` active (None: the unablated model). Inputs are
    built as :func:`vlmattn.engine.inference.capture_attention` builds them
    (:func:`vlmattn.engine.inference.model_inputs`)."""
    _check_index(token_id, "token_id")
    return _logprob(lm, model_inputs(lm, image, question), int(token_id), ablation)


def _check_index(value, name: str, stop: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0 or \
            (stop is not None and value >= stop):
        bound = "" if stop is None else f" and < {stop}"
        raise ValueError(f"{name} must be an integer ≥ 0{bound}, got {value!r}")
    return int(value)


def _label(heads: Sequence[tuple[int, int]]) -> str:
    return ";".join(f"{layer}.{head}" for layer, head in heads)


def _key(heads) -> tuple[tuple[int, int], ...]:
    """A head set as a sorted tuple: the same set, drawn in any order, is one key."""
    return tuple(sorted(heads))


def causal_table(lm: LoadedModel, items: Sequence, ranked_heads: Sequence, *, ks: Sequence[int], n_random: int,
                 seed: int, mode: str, draw: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Δ log-prob of the answer when the top-k ranked heads are ablated, against random k-head sets,
    and each head's Δ alone.

    Parameters
    ----------
    lm : LoadedModel
    items : sequence of (image, question, answer token id)
        The condition-A items; the token id is the expected answer's first token (:func:`answer_token_id`).
    ranked_heads : sequence of (layer, head)
        Distinct language-model query heads, best first: the whole ranking (e.g. the rows of a head
        contrast with a rank, in rank order), since the ``ranked`` and ``layer_matched`` nulls draw from it.
    ks : sequence of int
        Set sizes, each ``0 ≤ k ≤ len(ranked_heads)``.
    n_random : int ≥ 0
        Random sets R per k (0: no random baseline, its columns NaN).
    seed : int
        Seed of the random sets (:func:`random_sets`).
    mode : "zero" or "mean"
        Ablation mode (:class:`vlmattn.engine.capture.HeadAblation`).
    draw : "ranked", "layer_matched" or "all"
        The null's pool (:func:`random_sets`, the module docstring).

    Returns
    -------
    summary : pandas.DataFrame
        One row per k (columns :data:`SUMMARY_COLUMNS`): ``heads`` the top-k set as ``"l.h;l.h"`` (rank
        order), ``delta_logprob`` = Δ_top(k), ``random_mean``, ``random_q05``, ``random_q95`` (numpy's
        linear quantiles) of the Δ_r(k), ``percentile`` (:func:`percentile`), ``n_random`` R,
        ``draw``, ``n_items`` I, ``mode``.
    draws : pandas.DataFrame
        ``len(ks)·n_random`` rows (columns :data:`DRAW_COLUMNS`): k, draw r (0-based), the random set
        (sorted ``"l.h;l.h"``) and its Δ_r(k).
    singles : pandas.DataFrame
        ``max(ks)`` rows (columns :data:`SINGLE_COLUMNS`), one per head of the first ``max(ks)`` ranked
        heads, in rank order: ``rank`` (1-based), ``layer``, ``head`` and ``delta_logprob`` = Δ({head}),
        the head ablated alone.
    """
    cfg = lm.model.config.get_text_config()
    n_layers, n_heads = int(cfg.num_hidden_layers), int(cfg.num_attention_heads)
    total = n_layers * n_heads
    if mode not in ABLATION_MODES:
        raise ValueError(f"mode must be one of {ABLATION_MODES}, got {mode!r}")
    if isinstance(items, (str, bytes)) or len(items) == 0:
        raise ValueError("items must be a non-empty sequence of (image, question, answer token id)")
    for j, item in enumerate(items):
        if len(item) != 3:
            raise ValueError(f"item {j} must be (image, question, answer token id), got {len(item)} fields")
        _check_index(item[2], f"answer token id of item {j}")
    ranked = []
    for pair in ranked_heads:
        if len(pair) != 2:
            raise ValueError(f"ranked_heads must hold (layer, head) pairs, got {pair!r}")
        ranked.append((_check_index(pair[0], "ranked layer", n_layers), _check_index(pair[1], "ranked head", n_heads)))
    if not ranked:
        raise ValueError("ranked_heads is empty")
    if len(set(ranked)) != len(ranked):
        raise ValueError("ranked_heads lists a (layer, head) more than once")
    if isinstance(ks, (str, bytes)) or len(ks) == 0:
        raise ValueError("ks must be a non-empty sequence of set sizes")
    ks = [_check_index(k, "k", total + 1) for k in ks]
    if max(ks) > len(ranked):
        raise ValueError(f"k = {max(ks)} exceeds the {len(ranked)} ranked heads")
    n_random = _check_index(n_random, "n_random")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")

    sets = random_sets(ranked, ks, n_random=n_random, draw=draw, n_layers=n_layers,
                       n_heads=n_heads, seed=seed)
    n_single = max(ks)
    distinct = sorted({_key(s) for s in [*(ranked[:k] for k in ks), *(s for k in ks for s in sets[k]),
                                         *([h] for h in ranked[:n_single])]} - {()})
    n_items = len(items)
    bar = progress(total=n_items * (1 + len(distinct)), desc="head ablation", unit="forward")
    try:
        inputs = [model_inputs(lm, image, question) for image, question, _ in items]
        tokens = [int(t) for _, _, t in items]

        def logprobs(heads) -> np.ndarray:
            ablation = HeadAblation.from_pairs(heads, mode) if heads else None
            out = np.empty(n_items)
            for j in range(n_items):
                out[j] = _logprob(lm, inputs[j], tokens[j], ablation)
                bar.update(1)
            return out

        base = logprobs([])
        # Δ of every distinct head set, each evaluated once
        deltas = {(): 0.0} | {heads: float(np.mean(logprobs(heads) - base)) for heads in distinct}

        def delta(heads) -> float:
            return deltas[_key(heads)]

        rows, draws = [], []
        for k in ks:
            top = ranked[:k]
            d_top = delta(top)
            d_rand = np.array([delta(s) for s in sets[k]])
            draws += [{"k": k, "draw": r, "heads": _label(s), "delta_logprob": d}
                      for r, (s, d) in enumerate(zip(sets[k], d_rand, strict=True))]
            has = len(d_rand) > 0
            rows.append({
                "k": k, "heads": _label(top), "delta_logprob": d_top,
                "random_mean": float(d_rand.mean()) if has else np.nan,
                "random_q05": float(np.quantile(d_rand, 0.05)) if has else np.nan,
                "random_q95": float(np.quantile(d_rand, 0.95)) if has else np.nan,
                "percentile": percentile(d_top, d_rand),
                "n_random": n_random, "draw": draw, "n_items": n_items, "mode": mode,
            })
        singles = [{"rank": r + 1, "layer": layer, "head": head, "delta_logprob": delta([(layer, head)]),
                    "n_items": n_items, "mode": mode} for r, (layer, head) in enumerate(ranked[:n_single])]
    finally:
        bar.close()
    return (pd.DataFrame(rows, columns=SUMMARY_COLUMNS), pd.DataFrame(draws, columns=DRAW_COLUMNS),
            pd.DataFrame(singles, columns=SINGLE_COLUMNS))
