"""Benchmark scoring rules against hand-computed cases, the VQA evaluation page's normalisation
examples and scikit-learn's binary metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from vlmattn import scoring as sc


@pytest.mark.parametrize("raw, normal", [
    # the documented steps: lower case, number words to digits, articles removed, contractions restored
    ("Two", "2"), ("the dog", "dog"), ("A red car", "red car"), ("dont", "don't"), ("youre", "you're"),
    ("Ive", "ive"),  # the table's capitalised keys never meet the lower-cased words
    # periods kept only before a digit; commas between digits removed without a space
    ("yes.", "yes"), ("3.5", "3.5"), ("100,978", "100978"),
    # punctuation touching a space is deleted, otherwise replaced by a space
    ("left-hand", "left hand"), ("black / white", "black white"), ("(red)", "red"),
    ("none", "0"), ("  ten\tapples\n", "10 apples"),
])
def test_vqa_normalisation_examples(raw, normal):
    assert sc.vqa_normalise(raw) == normal


def test_vqa_accuracy_leave_one_out():
    # k matching humans of ten: (k·min((k − 1)/3, 1) + (10 − k)·min(k/3, 1)) / 10
    for k, expected in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]:
        refs = ["cat"] * k + ["dog"] * (10 - k)
        assert sc.vqa_accuracy("cat", refs) == pytest.approx(expected)
    # the prediction is normalised: "Two." → "2"
    assert sc.vqa_accuracy("Two.", ["2"] * 10) == 1.0
    # references are punctuation-normalised only when they differ, and never digit/article-normalised
    assert sc.vqa_accuracy("left-hand", ["left-hand"] * 10) == 0.0  # the prediction became "left hand"
    assert sc.vqa_accuracy("left-hand", ["left-hand"] * 9 + ["left"]) == pytest.approx(1.0)
    assert sc.vqa_accuracy("yes", ["yes!"] * 9 + ["no"]) == 0.0  # "yes!" → "yes " (replaced, not stripped)
    assert sc.vqa_accuracy("2", ["two"] * 5 + ["2"] * 5) == pytest.approx(1.0)  # five "2": ≥ 3 in every subset
    assert sc.vqa_accuracy("2", ["two"] * 8 + ["2"] * 2) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="at least 2"):
        sc.vqa_accuracy("cat", ["cat"])


def test_textvqa_normalises_both_sides():
    assert sc.evalai_normalise("Coca-Cola") == "coca cola"
    assert sc.evalai_normalise("John's") == "john 's"
    assert sc.textvqa_accuracy("coca cola", ["Coca-Cola"] * 10) == 1.0
    assert sc.textvqa_accuracy("the STOP", ["stop"] * 2 + ["halt"] * 8) == pytest.approx(0.6)


def test_gqa_exact_match():
    assert sc.gqa_match("Yes.", "yes") and sc.gqa_match(" left ", "left")
    assert not sc.gqa_match("on the left", "left")


@pytest.mark.parametrize("text, label", [
    ("Yes, there is a dog in the image.", "yes"), ("No, there is not.", "no"), ("There is no dog", "no"),
    ("The dog is not there", "no"), ("No", "no"), ("I don't know", "yes"),  # POPE reads anything else as yes
    ("Yes. No.", "yes"),  # the first sentence only
])
def test_pope_label(text, label):
    assert sc.pope_label(text) == label


def test_pope_metrics_equal_sklearn():
    rng = np.random.default_rng(3)
    truth = rng.choice(["yes", "no"], 200)
    pred = np.where(rng.random(200) < 0.8, truth, rng.choice(["yes", "no"], 200))
    m = sc.pope_metrics(pred, truth)
    y, t = pred == "yes", truth == "yes"
    assert m["accuracy"] == pytest.approx(accuracy_score(t, y))
    assert m["precision"] == pytest.approx(precision_score(t, y))
    assert m["recall"] == pytest.approx(recall_score(t, y))
    assert m["f1"] == pytest.approx(f1_score(t, y))
    assert m["yes_ratio"] == pytest.approx(y.mean())
    assert np.isnan(sc.pope_metrics(["no", "no"], ["yes", "no"])["precision"])


@pytest.mark.parametrize("text, label", [
    ("Yes", "yes"), ("no", "no"), ("No.", "no"), ("Yes, it is.", "yes"), ("Not sure", "no"),
    ("The answer is yes", "other"),
])
def test_mme_label(text, label):
    assert sc.mme_label(text) == label


def test_mme_scores_by_hand():
    items = pd.DataFrame({
        "category": ["existence"] * 4 + ["count"] * 4 + ["code_reasoning"] * 2,
        "image": ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"],
        "correct": [True, True, True, False, True, False, False, False, True, True]})
    t = sc.mme_scores(items).set_index("category")
    assert t.loc["existence", "acc"] == 0.75 and t.loc["existence", "acc_plus"] == 0.5
    assert t.loc["existence", "score"] == pytest.approx(125.0)
    assert t.loc["count", "score"] == pytest.approx(25.0)  # acc 1/4, acc+ 0
    assert t.loc["perception", "score"] == pytest.approx(150.0)
    assert t.loc["cognition", "score"] == pytest.approx(200.0)


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("(C)", "C"), ("A.", "A"), ("The answer is D.", "D"), ("I think (B) is right", "B"),
    ("answer is: (A) a cat", "A"), ("E", None), ("A cat", "A"), ("none of them", None),
])
def test_choice_letter(text, letter):
    assert sc.choice_letter(text, 4) == letter


def test_score_dispatch():
    assert sc.score("exact", "Yes, it is", ["yes"]) == 1.0
    assert sc.score("pope", "No, there is none.", ["no"]) == 1.0
    assert sc.score("mme", "Yes", ["No"]) == 0.0
    assert sc.score("choice", "(B)", ["b"], n_options=3) == 1.0
    assert sc.score("vqav2", "cat", ["cat", "cat", "dog"]) == pytest.approx(4 / 9)
    with pytest.raises(ValueError, match="unknown scoring rule 'bleu'"):
        sc.score("bleu", "x", ["x"])
    with pytest.raises(ValueError, match="n_options"):
        sc.score("choice", "A", ["A"])
