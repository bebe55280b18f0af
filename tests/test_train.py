"""The shapes-task recipe: the default run's trained model beats chance on every question type, and
training is deterministic. Accuracy is measured by greedy generation after reloading the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from vlmattn.images.synthetic import COLOURS, SHAPES, Shape
from vlmattn.models import shapes_task as task
from vlmattn.models.train import TrainSpec, build, evaluate, first_word, patch_truth, train

# A small recipe for the determinism and logging tests (a few steps of each stage)
SMALL = dict(patch_steps=1500, steps=1000, eval_every=500, heldout_per_type=16)


def test_corner_rule():
    inside = Shape("circle", "red", (0.05, 0.1, 0.3, 0.35))
    straddle = Shape("square", "blue", (0.4, 0.6, 0.6, 0.8))
    assert task.corner_answer([inside], "top left") == "yes"
    assert task.corner_answer([inside], "top right") == "no"
    assert task.corner_answer([straddle], "bottom left") is None
    assert task.corner_answer([straddle], "top left") == "no"
    assert task.corner_answer([inside, straddle], "bottom right") is None


def test_sampled_examples_follow_the_rules():
    rng = np.random.default_rng(0)
    seen: dict[tuple[str, str], int] = {}
    for _ in range(400):
        e = task.sample_example(rng, 32, "position")
        assert e.answer == task.corner_answer(e.shapes, e.corner)
        assert e.question == task.question_text("position", e.corner)
        assert len(e.boxes) == len(e.shapes) and e.image.size == (32, 32)
        seen[(e.corner, e.answer)] = seen.get((e.corner, e.answer), 0) + 1
    assert len(seen) == 8 and min(seen.values()) > 25  # every corner, both answers
    for qtype in ("shape", "colour"):
        e = task.sample_example(rng, 32, qtype)
        assert len(e.shapes) == 1 and e.answer in task.ANSWERS[qtype]


def test_answers_are_one_token_then_eos():
    _, processor = build(TrainSpec())
    tok = processor.tokenizer
    for words in task.ANSWERS.values():
        for w in words:
            ids = tok(" " + w + tok.eos_token, add_special_tokens=False).input_ids
            assert len(ids) == 2 and ids[-1] == tok.eos_token_id, w
    assert first_word(" Triangle.") == "triangle"


def test_patch_labels():
    """A green square on the top-left 2×2 patches of a 32 px, 4 px-patch grid (8×8 patches)."""
    t, _ = patch_truth([Shape("square", "green", (0.0, 0.0, 0.25, 0.25))], 32, 4)
    grid = t.view(3, 8, 8)
    colour, shape, corner = 1 + list(COLOURS).index("green"), 1 + SHAPES.index("square"), 1
    assert grid[:, :2, :2].flatten().tolist() == [colour] * 4 + [shape] * 4 + [corner] * 4
    assert int((t > 0).sum()) == 12  # nothing else is covered


def test_patch_masks():
    """Masks are the drawn pixels cut into patches: an 8 px square at pixels 2..9 of a 32 px image
    (4 px patches) fills patch (0, 0) from pixel (2, 2), patches (0, 1), (1, 0) from 2 and (1, 1)
    from 0, up to pixel 9 (two columns/rows into patch 2)."""
    image = np.zeros((32, 32), bool)
    image[2:10, 2:10] = True
    _, m = patch_truth([Shape("square", "white", (2 / 32, 2 / 32, 10 / 32, 10 / 32))], 32, 4)
    expected = image.reshape(8, 4, 8, 4).transpose(0, 2, 1, 3).reshape(64, 16)
    assert m.shape == (64, 16)
    assert np.array_equal(m.numpy().astype(bool), expected)
    assert m.view(8, 8, 4, 4)[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert int(m.sum()) == 64


@pytest.fixture(scope="module")
def trained(default_run):
    """The default run's trained model (``models.toy_llava``: the default recipe, seed 0) and its
    training report."""
    return default_run / "results/models/toy_llava", default_run / "results/tables/training_toy_llava.csv"


@pytest.mark.pipeline
def test_default_recipe_beats_chance(trained):
    """Greedy answers on 128 fresh held-out examples per type; one-sided binomial test against
    chance (1 / number of answers) at p < 0.001 for every question type (with 128 answers, a yes/no
    accuracy of 0.65 already clears it)."""
    model, _ = trained
    n = 128
    acc = evaluate(model, n_per_type=n, seed=7)
    for qtype in task.QUESTION_TYPES:
        chance = 1 / len(task.ANSWERS[qtype])
        p = binomtest(round(acc[qtype] * n), n, chance, alternative="greater").pvalue
        assert p < 1e-3, (qtype, acc)


@pytest.mark.pipeline
def test_report_and_checkpoint(trained):
    model, report = trained
    on_disk = pd.read_csv(report)
    assert set(on_disk.columns) >= {"step", "question_type", "loss", "heldout_accuracy"}
    assert set(task.QUESTION_TYPES) <= set(on_disk.question_type)
    assert (report.parent.parent / "plots/training_toy_llava.png").stat().st_size > 0
    meta = json.loads((model / "training.json").read_text())
    assert meta["train_spec"] == json.loads(json.dumps(TrainSpec.from_dict({"seed": 0}).to_dict()))


def test_same_seed_same_weights(tmp_path):
    from safetensors.numpy import load_file

    spec = TrainSpec.from_dict({**SMALL, "patch_steps": 5, "steps": 5, "eval_every": 5, "heldout_per_type": 2})
    train(spec, tmp_path / "a")
    train(spec, tmp_path / "b")
    a, b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_training_log_is_sparse(tmp_path, monkeypatch):
    """In a log file (not a terminal) the progress bar writes one plain line at most every
    LOG_INTERVAL seconds (plus the first and the last), not one per step."""
    import io
    import sys
    import time

    from vlmattn.progress import LOG_INTERVAL

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    spec = TrainSpec.from_dict({**SMALL, "patch_steps": 20, "steps": 20, "eval_every": 40, "heldout_per_type": 2})
    t0 = time.monotonic()
    train(spec, tmp_path / "m")
    elapsed = time.monotonic() - t0
    text = log.getvalue()
    bars = [line for line in text.split("\n") if "train:" in line]
    assert not any("\r" in line for line in bars), bars
    assert 1 <= len(bars) <= 3 + elapsed / LOG_INTERVAL, text
