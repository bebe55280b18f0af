"""Online pruning evaluation: the held-out evaluation set, the statistics (Wilson interval, exact
McNemar, BH over scorers) against closed forms and planted effects, and a tiny end-to-end run on the
tiny LLaVA checkpoint checked against plain greedy generation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from vlmattn.answers import normalise_answer
from vlmattn.engine.inference import model_inputs
from vlmattn.errors import InputError
from vlmattn.models import shapes_task as task
from vlmattn.pruning import evalset
from vlmattn.pruning import scorers as sc
from vlmattn.pruning.evaluate import STUDIES, capture_item, evaluate
from vlmattn.pruning.stats import (
    ablation_tables,
    accuracy_table,
    best_scorers,
    rank_table,
    speed_table,
    worst_scorers,
)
from vlmattn.stats import mcnemar_exact, wilson_interval


# ------------------------------------------------------------------------------------ evaluation set
def test_evaluation_set_is_balanced_and_deterministic():
    items = evalset.evaluation_set(32, size=64)
    counts = pd.Series([it.qtype for it in items]).value_counts()
    assert counts.to_dict() == {q: 8 for q in task.QUESTION_TYPES}
    corners = pd.Series([it.corner for it in items if it.qtype == "position"]).value_counts()
    assert corners.to_dict() == {c: 2 for c in task.CORNERS}
    again = evalset.evaluation_set(32, size=64)
    for a, b in zip(items, again, strict=True):
        assert (a.question, a.answer, a.qtype, a.corner) == (b.question, b.answer, b.qtype, b.corner)
        assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.boxes, b.boxes)
    prefix = evalset.evaluation_set(5, size=64)
    assert [p.question for p in prefix] == [it.question for it in items[:5]]
    assert [p.image.tobytes() for p in prefix] == [it.image.tobytes() for it in items[:5]]
    other = evalset.evaluation_set(32, seed=evalset.EVAL_SEED + 1, size=64)
    assert any(a.image.tobytes() != b.image.tobytes() for a, b in zip(items, other, strict=True))


def test_evaluation_items_follow_the_task():
    for it in evalset.evaluation_set(16, size=224):
        assert it.image.size == (224, 224)
        assert it.question == task.question_text(it.qtype, it.corner)
        assert it.answer in task.ANSWERS[it.qtype]
        assert it.boxes.shape[1] == 4 and ((it.boxes >= 0) & (it.boxes <= 224)).all()
        if it.qtype == "count":
            assert it.answer == task.COUNT_WORDS[len(it.boxes) - 1]
        elif it.qtype in ("shape", "colour"):
            assert len(it.boxes) == 1
        # every box is drawn: the image is non-black inside it
        for x0, y0, x1, y1 in it.boxes.astype(int):
            assert np.asarray(it.image)[y0:y1, x0:x1].any()


def test_evaluation_set_avoids_training_seeds():
    from vlmattn.models.train import TrainSpec

    spec = TrainSpec()
    assert set(evalset.TRAINING_SEEDS) == {spec.seed, spec.heldout_seed}
    assert evalset.EVAL_SEED not in evalset.TRAINING_SEEDS
    for seed in evalset.TRAINING_SEEDS:
        with pytest.raises(ValueError, match="training seeds"):
            evalset.evaluation_set(4, seed=seed, size=64)
    with pytest.raises(ValueError, match="n must be"):
        evalset.evaluation_set(0, size=64)


# ---------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("x,n", [(0, 10), (3, 10), (10, 10), (37, 50), (1, 1)])
def test_wilson_interval_solves_the_score_equation(x, n):
    """The Wilson bounds are the roots p of (p̂ − p)² = z² p (1 − p) / n, and scipy's own Wilson interval."""
    low, high = wilson_interval(x, n, confidence=0.95)
    z = stats.norm.ppf(0.975)
    p_hat = x / n
    roots = np.sort(np.roots([1 + z**2 / n, -(2 * p_hat + z**2 / n), p_hat**2]).real)
    assert np.allclose([low, high], roots, atol=1e-12)
    ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert np.allclose([low, high], [ci.low, ci.high], atol=1e-12)


def test_wilson_interval_broadcasts_and_rejects_bad_counts():
    low, high = wilson_interval(np.array([0, 5]), np.array([0, 10]))
    assert np.isnan(low[0]) and np.isnan(high[0]) and 0 < low[1] < 0.5 < high[1] < 1
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_mcnemar_exact_by_hand():
    # b = 1, c = 7: P(X ≤ 1) + P(X ≥ 7) for X ~ Bin(8, ½) = 2 · (1 + 8) / 256
    assert mcnemar_exact(1, 7) == pytest.approx(18 / 256, rel=1e-12)
    assert mcnemar_exact(7, 1) == pytest.approx(18 / 256, rel=1e-12)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32, rel=1e-12)
    assert mcnemar_exact(4, 4) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def planted_rows(n_items: int, lost: int, gained: int) -> pd.DataFrame:
    """Unpruned correct on items ≥ 3 (wrong on 0, 1, 2); ``worse`` loses ``lost`` items of those the
    unpruned model gets right; ``same`` answers exactly as the unpruned model; ``better`` fixes
    ``gained`` of the 3 wrong items."""
    truth = np.ones(n_items, bool)
    truth[:3] = False
    rows = []

    def add(study, scorer, correct):
        for i in range(n_items):
            rows.append(dict(item=i, mode="none" if study == "unpruned" else "drop", study=study, scorer=scorer,
                             budget=5, kept=0.5, average_tokens=7.5, correct=bool(correct[i]),
                             answer="yes" if correct[i] else "no",
                             recall=0.5, flops_fraction=0.6, prefill_s=0.4 if study == "unpruned" else 0.1,
                             decode_s=0.2, peak_memory_bytes=1000))

    add("unpruned", "unpruned", truth)
    worse = truth.copy()
    worse[3:3 + lost] = False
    better = truth.copy()
    better[:gained] = True
    add("study_a", "head:worse", worse)
    add("study_a", "head:same", truth)
    add("study_a", "head:better", better)
    add("baseline", "random:0", truth)
    add("study_b", "query:worse", worse)
    return pd.DataFrame(rows)


def test_accuracy_table_detects_a_planted_loss():
    rows = planted_rows(40, lost=12, gained=2)
    table = accuracy_table(rows[rows["study"].isin(["unpruned", "study_a"])]).set_index("scorer")
    assert table.loc["head:worse", ["n_lost", "n_gained", "n_correct"]].tolist() == [12, 0, 25]
    assert table.loc["head:worse", "accuracy"] == pytest.approx(25 / 40)
    assert table.loc["head:worse", "unpruned_accuracy"] == pytest.approx(37 / 40)
    assert table.loc["head:worse", "agreement"] == pytest.approx(28 / 40)
    p_worse, p_better = 2 * 0.5**12, 0.5  # Bin(12, ½) all on one side; Bin(2, ½): 2 · ¼
    assert table.loc["head:worse", "p"] == pytest.approx(p_worse, rel=1e-12)
    assert table.loc["head:better", "p"] == pytest.approx(p_better, rel=1e-12)
    assert table.loc["head:same", "p"] == 1.0 and table.loc["head:same", "agreement"] == 1.0
    # BH over the three scorers: sorted p = (p_worse, 0.5, 1) → adjusted (3 p_worse, 0.75, 1)
    assert table.loc["head:worse", "p_adj"] == pytest.approx(3 * p_worse, rel=1e-12)
    assert table.loc["head:better", "p_adj"] == pytest.approx(0.75)
    assert table["significant"].to_dict() == {"head:worse": True, "head:same": False, "head:better": False}
    low, high = wilson_interval(25, 40)
    assert (table.loc["head:worse", "ci_low"], table.loc["head:worse", "ci_high"]) == (low, high)


def test_ablation_tables_add_the_baselines_and_rank():
    rows = planted_rows(40, lost=12, gained=2)
    tables = ablation_tables(rows)
    assert set(tables) == {"study_a", "study_b", "published"}
    assert set(tables["study_a"]["scorer"]) == {"head:worse", "head:same", "head:better", "random:0"}
    assert set(tables["study_b"]["scorer"]) == {"query:worse", "random:0"}
    assert set(tables["published"]["scorer"]) == {"random:0"}
    a = tables["study_a"]
    assert best_scorers(a, budget=5, n=1)["scorer"].tolist() == ["head:better"]
    assert worst_scorers(a, budget=5, n=1)["scorer"].tolist() == ["head:worse"]
    # equal recall everywhere: ties go by scorer name
    assert best_scorers(a, budget=5, by="recall", n=2)["scorer"].tolist() == ["head:better", "head:same"]
    with pytest.raises(ValueError, match="budget 7"):
        best_scorers(a, budget=7)
    speed = speed_table(rows.assign(layer=1, reused=False))
    assert speed["mode"].tolist() == ["none", "drop"] and speed["n_runs"].tolist() == [40, 5 * 40]
    assert speed["prefill_speedup"].tolist() == pytest.approx([1.0, 4.0])  # 0.4 s / 0.1 s
    assert speed["decode_speedup"].tolist() == pytest.approx([1.0, 1.0])


def test_rank_table_places_the_baselines():
    rows = planted_rows(40, lost=12, gained=2)
    extra = rows[rows["scorer"] == "random:0"].assign(scorer="random:1")
    extra.loc[extra.index[3:23], ["correct", "answer"]] = [False, "no"]  # draw 1: 20 of 40 lost
    pool = rows[rows["scorer"] == "head:worse"].assign(study="baseline", scorer="pooling")
    table = ablation_tables(pd.concat([rows, extra, pool], ignore_index=True))["study_a"]
    ranks = rank_table(table, study="study_a").set_index("by")
    acc = ranks.loc["accuracy"]
    # study A: better 39/40, same 37/40, worse 25/40; random mean (37 + 17)/2 / 40 = 27/40; pooling 25/40
    assert (acc["best"], acc["worst"]) == ("head:better", "head:worse")
    assert acc["best_value"] == pytest.approx(39 / 40) and acc["worst_value"] == pytest.approx(25 / 40)
    assert acc["random_value"] == pytest.approx(27 / 40)
    assert (acc["random_rank"], acc["pooling_rank"], acc["n_ranked"]) == (3, 4, 5)  # pooling ties worse: rank 4
    rec = ranks.loc["recall"]  # every recall 0.5: all tie for first, names break best/worst ties
    assert (rec["best"], rec["worst"], rec["random_rank"], rec["pooling_rank"]) == ("head:better", "head:better", 1, 1)
    with pytest.raises(ValueError, match="unpruned row"):
        accuracy_table(rows[rows["study"] != "unpruned"])


# ---------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def lm(loaded):
    return loaded("llava")


def test_evaluate_end_to_end_on_the_tiny_llava(lm):
    items = evalset.evaluation_set(2, size=64)
    sample, embeddings = capture_item(lm, items[0])
    n_vis = len(sample.vision_index)
    assert embeddings.shape == (sample.prefill.shape[-1], lm.model.config.text_config.hidden_size)
    budgets = [n_vis, n_vis // 3]
    rows = evaluate(lm, items, prune_layer=1, budgets=budgets, max_new_tokens=3, n_draws=2, reuse_runs=False,
                    show_progress=False)
    assert set(rows["study"]) == set(STUDIES)
    per_item = rows.groupby("item").size()
    # published (fastv, pyramiddrop, sparsevlm, 2 encoder), heads, queries, baselines
    n_scorers = 5 + len(sc.HEAD_STRATEGIES) + len(sc.QUERY_STRATEGIES) + 2 + 1
    assert per_item.tolist() == [1 + n_scorers * len(budgets)] * 2
    assert {"fastv", "pyramiddrop", "sparsevlm", "fastervlm", "visionzip_dominant", "pooling", "random:0",
            "random:1", "head:variance", "query:system_and_text"} <= set(rows["scorer"])
    for it in items:
        inputs = model_inputs(lm, it.image, it.question)
        with torch.no_grad():
            out = lm.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        text = lm.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        plain = rows[(rows["item"] == it.index) & (rows["study"] == "unpruned")].iloc[0]
        assert plain["answer"] == normalise_answer(text)
        assert plain["correct"] == (normalise_answer(text) == it.answer)
    full = rows[(rows["budget"] == n_vis) & (rows["study"] != "unpruned")]
    assert full["agrees_with_unpruned"].all() and not full["reused"].any()
    assert np.allclose(full["flops_fraction"], 1.0) and (full["kept"] == 1.0).all()
    assert (full["average_tokens"] == n_vis).all()
    # (ℓ·V + (L − ℓ)·k) / L: the in-LLM scorers keep V at layer 0 of the tiny model's L layers
    n_layers = lm.model.config.text_config.num_hidden_layers
    part = rows[(rows["budget"] == n_vis // 3) & (rows["study"] != "unpruned")]
    np.testing.assert_allclose(part["average_tokens"],
                               (part["layer"] * n_vis + (n_layers - part["layer"]) * (n_vis // 3)) / n_layers)
    small = rows[rows["budget"] == n_vis // 3]
    assert (small["flops_fraction"] < 1).all()
    before_llm = small.loc[small["layer"] == 0, "flops_fraction"]
    assert (before_llm < small.loc[small["layer"] == 1, "flops_fraction"].min()).all()
    tables = ablation_tables(rows)
    at_full = tables["study_a"][tables["study_a"]["budget"] == n_vis]
    assert (at_full["agreement"] == 1.0).all() and (at_full["p"] == 1.0).all()


def test_evaluate_rejects_bad_budgets_and_layers(lm):
    items = evalset.evaluation_set(1, size=64)
    with pytest.raises(ValueError, match="budgets must lie"):
        evaluate(lm, items, prune_layer=1, budgets=[0], max_new_tokens=1, show_progress=False)
    for k in (0, 2):  # the model has 2 decoder layers: 1 ≤ K < 2
        with pytest.raises(InputError, match=rf"pruning.prune_layer: {k} needs 1 <= K < 2"):
            evaluate(lm, items, prune_layer=k, budgets=[1], max_new_tokens=1, show_progress=False)


def test_evaluate_masked_variant_answers_as_dropped(lm):
    """With original positions, masking the tokens from layer K on is dropping them (same logits up to
    rounding, tests/test_pruning_online.py): the two modes give the same answers, masked runs no FLOPs saved."""
    items = evalset.evaluation_set(2, size=64)
    rows = evaluate(lm, items, prune_layer=1, budgets=[5], max_new_tokens=2, n_draws=1, modes=("drop", "mask"),
                    head_strategies=["variance"], query_strategies=["last_token"], show_progress=False)
    drop = rows[rows["mode"] == "drop"].set_index(["item", "scorer"]).sort_index()
    mask = rows[rows["mode"] == "mask"].set_index(["item", "scorer"]).sort_index()
    assert len(drop) == len(mask) == 2 * (5 + 1 + 1 + 1 + 1)
    assert (drop["answer"] == mask["answer"]).all()
    assert (mask["flops_fraction"] == 1.0).all() and (drop["flops_fraction"] < 1).all()
    assert (rows.loc[rows["study"] == "unpruned", "mode"] == "none").all()
    table = accuracy_table(rows)
    assert set(table["mode"]) == {"drop", "mask"}
    with pytest.raises(ValueError, match="modes"):
        evaluate(lm, items, prune_layer=1, budgets=[5], max_new_tokens=1, modes=("cut",), show_progress=False)
