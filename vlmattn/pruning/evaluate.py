"""Online evaluation of pruning scorers: per question, every scorer and budget runs the model with the
other vision tokens dropped (:func:`vlmattn.engine.pruned.generate_pruned`, ``mode="drop"``) and the
answer is checked against the truth and against the unpruned model.

Per item (an :class:`~vlmattn.pruning.evalset.EvalItem`, or anything with ``index, image, question,
answer, qtype, boxes``):

1. one capture (:func:`vlmattn.engine.inference.capture_attention`, ``prefill_rows="all_text"`` so that every
   query strategy finds its rows, one generated token: only the prefill is scored), with the language
   model's input embeddings recorded for SparseVLM's raters;
2. the scores ``[V]`` (:func:`scores`): study A, ``head:<strategy>`` per head strategy with the
   ``fixed_query`` rows (FastV's ``last_token``); study B, ``query:<strategy>`` per query strategy with
   the ``fixed_head`` selection (``variance``); the published signals ``fastv``, ``pyramiddrop``,
   ``sparsevlm`` and, for an encoder with a CLS token, ``fastervlm`` and ``visionzip_dominant``;
   the baselines ``random:<d>`` (d = 0 … n_draws − 1, scores of
   :func:`~vlmattn.pruning.scorers.random_scores` with ``seed`` and draw ``index · n_draws + d``, so a
   fresh subset per item and draw) and ``pooling`` (a uniform spatial subsample per budget);
3. per scorer and budget k the kept set ``keep_indices(score, k)`` and one greedy generation with the
   other V − k vision tokens dropped from the scorer's layer on: ``prune_layer`` K for the language-model
   signals (scored from layer K − 1, PyramidDrop from layer K, see :mod:`.scorers`), 0 for the
   encoder-CLS signals ``fastervlm`` and ``visionzip_dominant`` (pruned before the language model, as
   published), ``prune_layer`` for the baselines; plus one unpruned generation (``keep=None``).

Rows (one per item × scorer × budget, plus one ``study == "unpruned"`` row per item):

    item, qtype, corner, mode, study, scorer, layer, budget, n_vision, n_tokens, kept, average_tokens, recall, answer,
    expected, correct, agrees_with_unpruned, prefill_s, decode_s, peak_memory_bytes, flops_fraction, reused, score

``mode`` ∈ ``modes`` (``drop``: the other tokens leave the sequence and the KV cache; ``mask``: they stay,
unattended from the layer on), ``none`` for the unpruned row;
``study`` ∈ {``study_a``, ``study_b``, ``published``, ``baseline``, ``unpruned``}; ``budget`` k = the number
of vision tokens kept (V for the unpruned row), ``kept`` = k / V, ``average_tokens`` = the vision tokens per
decoder layer averaged over the L layers, (ℓ·V + (L − ℓ)·k) / L for ``layer`` ℓ
(:func:`vlmattn.pruning.offline.average_tokens`, the count in-LLM methods report);
``recall`` = |kept ∩ objects| / |objects| (:func:`vlmattn.pruning.offline.object_recall`; objects = tokens
under the item's boxes; NaN without an object); ``answer`` = what the set's scoring rule reads from the
generated text (:func:`vlmattn.scoring.reading`; rule ``exact``, the shapes task's: the normalised first
word, :func:`vlmattn.answers.normalise_answer`), ``expected`` the first reference answer (normalised
under ``exact``), ``score`` the rule's per-item score of the generated text against the item's
references (:func:`vlmattn.scoring.score`: 0/1, or VQA accuracy), ``correct`` = ``score == 1``
(under ``exact``: ``answer == expected``), ``agrees_with_unpruned`` = ``answer`` equals the unpruned row's;
``prefill_s``/``decode_s``/``peak_memory_bytes`` the run's wall times and peak memory
(:class:`~vlmattn.engine.pruned.PrunedResult`: CUDA allocator peak on a GPU, process RSS peak on the CPU);
``flops_fraction`` = :func:`vlmattn.pruning.flops.kept_fraction` with n = N (the whole prompt), n̂ = N − (V − k),
K = ``layer`` and the text model's depth, width and feed-forward size (1 for ``mask``, which saves
nothing). With ``reuse_runs`` a kept set already generated for the item (several scorers often agree)
is not run again: the row copies that run's answer and timings and has ``reused`` True.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import scoring as scoring_rules
from ..answers import normalise_answer
from ..engine.adapters.base import language_model
from ..engine.inference import LoadedModel, capture_attention, model_inputs
from ..engine.pruned import MODES, generate_pruned
from ..progress import progress
from ..store import AttentionSample
from . import offline
from . import scorers as sc
from .flops import kept_fraction
from .options import check_prune_layer

STUDIES = ("study_a", "study_b", "published", "baseline", "unpruned")
#: published signals pruned before the language model (layer 0)
ENCODER_SIGNALS = ("fastervlm", "visionzip_dominant")
COLUMNS = ["item", "qtype", "corner", "mode", "study", "scorer", "layer", "budget", "n_vision", "n_tokens", "kept",
           "average_tokens", "recall", "answer", "expected", "correct", "agrees_with_unpruned", "prefill_s", "decode_s",
           "peak_memory_bytes", "flops_fraction", "reused", "score"]


def scorer_study(name: str) -> str:
    """The study a scorer name belongs to: ``head:*`` → study_a, ``query:*`` → study_b, ``random:*`` and
    ``pooling`` → baseline, any other (the published signals) → published."""
    if name.startswith("head:"):
        return "study_a"
    if name.startswith("query:"):
        return "study_b"
    if name.startswith("random:") or name == "pooling":
        return "baseline"
    return "published"


@torch.no_grad()
def capture_item(lm: LoadedModel, item) -> tuple[AttentionSample, np.ndarray]:
    """``(sample, embeddings [N, D])``: the capture of one item with every text row stored and the item's
    boxes attached, and the language model's input embeddings of the prompt (float64), read from the
    prefill call of ``lm.model.model.language_model``."""
    seen: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        if not seen:
            seen.append(kwargs["inputs_embeds"][0].detach().to(torch.float64).cpu())

    handle = language_model(lm.model).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        sample = capture_attention(lm, item.image, item.question, max_new_tokens=1, prefill_rows="all_text",
                                   vision_rollout=False)
    finally:
        handle.remove()
    sample = dataclasses.replace(sample, boxes=np.asarray(item.boxes, np.float32).reshape(-1, 4))
    return sample, seen[0].numpy()


def _sizes(lm: LoadedModel) -> dict:
    """The text model's depth, width and feed-forward size, as :func:`~vlmattn.pruning.flops.kept_fraction`
    takes them."""
    cfg = lm.model.config.get_text_config()
    return dict(n_layers=int(cfg.num_hidden_layers), hidden_size=int(cfg.hidden_size),
                ffn_size=int(cfg.intermediate_size))


def _judged(item, text: str, scoring: str) -> dict:
    """``answer``, ``expected``, ``correct`` and ``score`` of generated ``text`` under rule ``scoring``
    (module docstring)."""
    n_options = getattr(item, "n_options", None)
    if scoring == "exact":
        answer, expected = normalise_answer(text), normalise_answer(item.answer)
        return {"answer": answer, "expected": expected, "correct": answer == expected,
                "score": float(answer == expected)}
    value = scoring_rules.score(scoring, text, getattr(item, "answers", (item.answer,)), n_options=n_options)
    return {"answer": scoring_rules.reading(scoring, text, n_options=n_options), "expected": item.answer,
            "correct": value == 1.0, "score": value}


def _unpruned_row(head: dict, layer: int, n_vis: int, n_tok: int, objects: np.ndarray, judged: dict,
                  prefill_s: float, decode_s: float, peak: int) -> dict:
    """The ``study == "unpruned"`` row of one item (every vision token kept)."""
    return {**head, "mode": "none", "study": "unpruned", "scorer": "unpruned", "layer": layer, "budget": n_vis,
            "n_vision": n_vis, "n_tokens": n_tok, "kept": 1.0, "average_tokens": float(n_vis),
            "recall": 1.0 if objects.any() else np.nan, **judged, "agrees_with_unpruned": True,
            "prefill_s": prefill_s, "decode_s": decode_s, "peak_memory_bytes": peak, "flops_fraction": 1.0,
            "reused": False}


def scores(sample: AttentionSample, embeddings: np.ndarray, *, prune_layer: int, head_strategies: Iterable[str],
           query_strategies: Iterable[str], fixed_query: str, fixed_head: str, n_heads: int, top_k: int, seed: int,
           n_draws: int, draw_offset: int, encoder_layer: int) -> dict[str, np.ndarray]:
    """Budget-independent scores ``name → [V]`` of one sample (module docstring, step 2):
    :func:`vlmattn.pruning.offline.sample_scores` without its random draws, plus ``sparsevlm`` (raters
    from ``embeddings [N, D]`` at the vision positions and the text after the image) and ``random:<d>``
    with draw ``draw_offset + d``."""
    out = offline.sample_scores(sample, prune_layer=prune_layer, head_strategies=head_strategies,
                                query_strategies=query_strategies, fixed_query=fixed_query, fixed_head=fixed_head,
                                n_heads=n_heads, top_k=top_k, seed=seed, n_draws=0, encoder_layer=encoder_layer)
    vis = sample.vision_index
    _, instr = sc.text_layout(sample.prefill.shape[-1], sample.image_positions)
    out["sparsevlm"] = sc.sparsevlm(sample.prefill, sample.prefill_positions, vis, prune_layer=prune_layer,
                                    text_positions=instr, vision_embeddings=embeddings[vis],
                                    text_embeddings=embeddings[instr])
    for d in range(n_draws):
        out[f"random:{d}"] = sc.random_scores(len(vis), seed=seed, draw=draw_offset + d)
    return out


def evaluate(lm: LoadedModel, items: Sequence, *, prune_layer: int, budgets: Iterable[int], max_new_tokens: int,
             head_strategies: Iterable[str] = sc.HEAD_STRATEGIES, query_strategies: Iterable[str] = sc.QUERY_STRATEGIES,
             fixed_query: str = "last_token", fixed_head: str = "variance", n_heads: int = 2, top_k: int = 10,
             seed: int = 0, n_draws: int = 3, encoder_layer: int = -2, positions: str = "keep",
             modes: Iterable[str] = ("drop",), reuse_runs: bool = True, scoring: str = "exact",
             show_progress: bool = True) -> pd.DataFrame:
    """Rows of the online evaluation (module docstring) of ``items`` on ``lm``, answers scored by rule
    ``scoring`` (:data:`vlmattn.scoring.RULES`).

    ``budgets``: kept vision-token counts k (1 ≤ k ≤ V; e.g. :func:`vlmattn.pruning.offline.scaled_budgets`
    of the model's V); ``prune_layer`` K (1 ≤ K < L, so that PyramidDrop's layer K exists; checked by
    :func:`vlmattn.pruning.options.check_prune_layer`, the option's one check);
    ``n_heads``/``top_k``: the head strategies' selection size and ``top_k_sum``'s k; ``positions``: rotary
    ids of the layers after pruning (``keep`` as FastV, ``renumber`` as PyramidDrop); ``modes``: ``drop``
    and/or ``mask`` (:func:`~vlmattn.engine.pruned.generate_pruned`), each scorer and budget run in each.
    Raises ValueError for a budget outside 1 … V or an unknown mode, InputError for a prune layer outside
    1 … L − 1.
    """
    budgets = [int(k) for k in budgets]
    modes = list(modes)
    bad_modes = [m for m in modes if m not in MODES]
    if bad_modes or not modes:
        raise ValueError(f"modes must be a non-empty list of {MODES}, got {modes}")
    head_strategies, query_strategies = list(head_strategies), list(query_strategies)
    size = _sizes(lm)
    n_layers = size["n_layers"]
    check_prune_layer(prune_layer, n_layers, lm.model_id)
    rows = []
    bar = progress(items, desc="pruning", unit="item", disable=not show_progress)
    for item in bar:
        sample, embeddings = capture_item(lm, item)
        n_vis, n_tok = len(sample.vision_index), int(sample.prefill.shape[-1])
        bad = [k for k in budgets if not 1 <= k <= n_vis]
        if bad:
            raise ValueError(f"budgets must lie in 1 … {n_vis} (the vision tokens), got {bad}")
        objects = offline.object_mask(sample)
        named = scores(sample, embeddings, prune_layer=prune_layer, head_strategies=head_strategies,
                       query_strategies=query_strategies, fixed_query=fixed_query, fixed_head=fixed_head,
                       n_heads=n_heads, top_k=top_k, seed=seed, n_draws=n_draws,
                       draw_offset=int(item.index) * n_draws, encoder_layer=encoder_layer)
        runs: dict[tuple, tuple] = {}

        def run(keep, layer, mode, runs=runs, item=item):
            key = (mode, layer, None if keep is None else tuple(int(i) for i in keep))
            if reuse_runs and key in runs:
                return runs[key], True
            res = generate_pruned(lm, item.image, item.question, keep=keep, layer=layer, mode=mode,
                                  positions=positions, max_new_tokens=max_new_tokens)
            runs[key] = (_judged(item, res.generated_text, scoring), res.prefill_seconds, res.decode_seconds,
                         int(res.peak_memory_bytes))
            return runs[key], False

        (plain, pre_s, dec_s, peak), _ = run(None, prune_layer, "drop")
        head = dict(item=int(item.index), qtype=item.qtype, corner=getattr(item, "corner", None))
        rows.append(_unpruned_row(head, prune_layer, n_vis, n_tok, objects, plain, pre_s, dec_s, peak))
        for mode in modes:
            for k in budgets:
                per_budget = dict(named, pooling=sc.pooling_scores(sample.grid, k))
                for name, score in per_budget.items():
                    layer = 0 if name in ENCODER_SIGNALS else prune_layer
                    keep = sc.keep_indices(score, k)
                    (judged, pre_s, dec_s, peak), reused = run(keep, layer, mode)
                    flops = 1.0 if mode == "mask" else float(
                        kept_fraction(n_tok, n_tok - (n_vis - k), prune_layer=layer, **size))
                    rows.append({**head, "mode": mode, "study": scorer_study(name), "scorer": name, "layer": layer,
                                 "budget": k, "n_vision": n_vis, "n_tokens": n_tok, "kept": k / n_vis,
                                 "average_tokens": offline.average_tokens(k, n_vis, n_layers=n_layers,
                                                                          prune_layer=layer),
                                 "recall": offline.object_recall(keep, objects), **judged,
                                 "agrees_with_unpruned": judged["answer"] == plain["answer"],
                                 "prefill_s": pre_s, "decode_s": dec_s, "peak_memory_bytes": peak,
                                 "flops_fraction": flops, "reused": reused})
    return pd.DataFrame(rows, columns=COLUMNS)


#: the study of the learned pruners' rows (scorer ``learned:<variant>``)
LEARNED_STUDY = "learned"


def evaluate_learned(lm: LoadedModel, pruners: dict, items: Sequence, *, budgets: Iterable[int], max_new_tokens: int,
                     positions: str = "keep", scoring: str = "exact", show_progress: bool = True) -> pd.DataFrame:
    """Rows (:data:`COLUMNS`, mode ``drop``) of learned pruners ``{variant: LearnedPruner}`` (one layer K
    each, :mod:`vlmattn.pruning.learned`) on ``items``: per item one unpruned run and, per variant and
    budget k, one greedy generation in which the pruner keeps the k highest-logit vision tokens, decided
    inside the prefill pass at layer K (layer K − 1's attention observed in the same pass), and the others
    are dropped from layer K on (:func:`~vlmattn.engine.pruned.generate_pruned`). ``study`` is
    :data:`LEARNED_STUDY`, ``scorer`` ``learned:<variant>``; recall and FLOPs as in :func:`evaluate`."""
    from .learned import evaluation_session

    budgets = [int(k) for k in budgets]
    size = _sizes(lm)
    layers = {name: p.layers for name, p in pruners.items()}
    if any(len(ks) != 1 for ks in layers.values()) or len({ks for ks in layers.values()}) > 1:
        raise ValueError(f"every pruner must have the same single layer, got {layers}")
    (layer,) = next(iter(layers.values()))
    rows = []
    for item in progress(items, desc="learned pruners", unit="item", disable=not show_progress):
        sample, _ = capture_item(lm, item)
        n_vis, n_tok = len(sample.vision_index), int(sample.prefill.shape[-1])
        bad = [k for k in budgets if not 1 <= k <= n_vis]
        if bad:
            raise ValueError(f"budgets must lie in 1 … {n_vis} (the vision tokens), got {bad}")
        objects = offline.object_mask(sample)
        vision = np.asarray(sample.vision_index)
        head = dict(item=int(item.index), qtype=item.qtype, corner=getattr(item, "corner", None))
        res = generate_pruned(lm, item.image, item.question, keep=None, layer=layer, mode="drop", positions=positions,
                              max_new_tokens=max_new_tokens)
        plain = _judged(item, res.generated_text, scoring)
        rows.append(_unpruned_row(head, layer, n_vis, n_tok, objects, plain, res.prefill_seconds,
                                  res.decode_seconds, int(res.peak_memory_bytes)))
        inputs = model_inputs(lm, item.image, item.question)
        for name, pruner in pruners.items():
            for k in budgets:
                with evaluation_session(lm, pruner, inputs, k) as session:
                    res = generate_pruned(lm, item.image, item.question, keep=session.decide, layer=layer,
                                          mode="drop", positions=positions, max_new_tokens=max_new_tokens)
                keep = np.flatnonzero(~np.isin(vision, res.dropped_positions))
                judged = _judged(item, res.generated_text, scoring)
                rows.append({**head, "mode": "drop", "study": LEARNED_STUDY, "scorer": f"learned:{name}",
                             "layer": layer, "budget": k, "n_vision": n_vis, "n_tokens": n_tok, "kept": k / n_vis,
                             "average_tokens": offline.average_tokens(k, n_vis, n_layers=size["n_layers"],
                                                                      prune_layer=layer),
                             "recall": offline.object_recall(keep, objects), **judged,
                             "agrees_with_unpruned": judged["answer"] == plain["answer"],
                             "prefill_s": res.prefill_seconds, "decode_s": res.decode_seconds,
                             "peak_memory_bytes": int(res.peak_memory_bytes),
                             "flops_fraction": float(kept_fraction(n_tok, n_tok - (n_vis - k), prune_layer=layer,
                                                                   **size)),
                             "reused": False})
    return pd.DataFrame(rows, columns=COLUMNS)
