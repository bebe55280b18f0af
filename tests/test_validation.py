"""Validation checks on hand-made tables whose outcome is known."""

import pandas as pd
import pytest

from vlmattn.summaries import means, summarise_tables
from vlmattn.validation.checks import validation_table

CFG = {"trained": "t", "untrained": "u", "object_questions": ["shape"], "min_object_lift": 2.0,
       "min_generated_accuracy": 0.9,
       "untrained_lift_tolerance": 0.25,
       "pooling": {"step_pool": "last", "head": "mean", "sinks": "included", "layers": "all"}}


def tables(lift_t, lift_u, ent_t, ent_u):
    answers = pd.DataFrame({"model": ["t", "t", "u"], "image": ["a", "b", "a"], "question": ["shape"] * 3,
                            "answer": ["circle", "square", "x"], "expected": ["circle", "square", "circle"],
                            "correct": [True, True, False]})
    sp, co = [], []
    for model, lifts, ent in (("t", lift_t, ent_t), ("u", lift_u, ent_u)):
        for layer, lift in enumerate(lifts):
            base = dict(model=model, image="a", question="shape", step_pool="last", head="mean", sinks="included",
                        layer=layer)
            sp.append({**base, "region": "obj", "region_kind": "object", "lift": lift})
            sp.append({**base, "region": "top_left", "region_kind": "quadrant", "lift": 99.0})
            sp.append({**base, "head": "0", "region": "obj", "region_kind": "object", "lift": 99.0})
            co.append({**base, "norm_entropy": ent, "effective_span": 10 * ent, "gini": 1 - ent})
    # the checks read the summaries' means, as the pipeline's job does
    keys = ["step_pool", "head", "sinks", "layer"]
    spatial = means(summarise_tables([pd.DataFrame(sp)], keys + ["region", "region_kind"], ["lift"]))
    conc = means(summarise_tables([pd.DataFrame(co)], keys, ["norm_entropy", "effective_span", "gini"]))
    return answers, spatial, conc


def test_all_pass_when_trained_model_looks_at_the_object():
    v = validation_table(*tables([2.0, 4.0], [1.1, 0.9], 0.5, 0.9), CFG)
    assert v["passed"].all(), v
    lift = v[(v.check == "object_lift") & (v.model == "t")].observed.item()
    assert lift == pytest.approx(3.0)  # mean over layers, quadrant and single-head rows ignored
    assert v[v.check == "entropy_lower"].observed.item() == pytest.approx(-0.4)
    assert list(v.check) == ["answers_correct", "object_lift", "object_lift", "entropy_lower",
                             "effective_span_lower", "gini_higher"]


def test_fails_for_a_model_that_looks_everywhere():
    v = validation_table(*tables([1.0, 1.2], [1.0, 1.0], 0.9, 0.9), CFG).set_index(["check", "model"])
    assert not v.loc[("object_lift", "t"), "passed"]
    assert v.loc[("object_lift", "u"), "passed"]
    assert not v.loc[("entropy_lower", "t - u"), "passed"]


def test_wrong_answer_fails():
    answers, sp, co = tables([3.0], [1.0], 0.5, 0.9)
    answers.loc[0, "correct"] = False
    v = validation_table(answers, sp, co, CFG)
    assert v[v.check == "answers_correct"].observed.item() == 0.5
    assert not v[v.check == "answers_correct"].passed.item()


def test_generated_scenes_are_held_to_the_held_out_target():
    answers, sp, co = tables([3.0], [1.0], 0.5, 0.9)
    gen = pd.DataFrame({"model": "t", "image": [f"corner_{i:03d}_{s}" for i in range(5) for s in "ab"],
                        "question": "top_left", "answer": "yes", "expected": ["yes", "no"] * 5, "correct": True})
    gen.loc[1, "correct"] = False  # 9 of 10 right
    v = validation_table(pd.concat([answers, gen], ignore_index=True), sp, co, CFG).set_index(["check", "question"])
    assert v.loc[("answers_correct", "shape"), "passed"]  # the named images alone
    row = v.loc[("generated_answers_correct", "top_left")]
    assert row["observed"] == pytest.approx(0.9) and row["passed"] and row["expectation"] == ">= 0.9"
    gen.loc[3, "correct"] = False  # 8 of 10
    v = validation_table(pd.concat([answers, gen], ignore_index=True), sp, co, CFG).set_index(["check", "question"])
    assert not v.loc[("generated_answers_correct", "top_left"), "passed"]
