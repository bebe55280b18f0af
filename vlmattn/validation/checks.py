"""Checks of the default run against the ground truth the toy model was trained on.

Every observed figure is read from tables the pipeline computed (``answers`` and the means of the
``spatial`` and ``concentration`` summaries, :func:`vlmattn.summaries.means`); nothing is typed in.
A mean over several summary groups weighs each group by its count, so it is the mean over the
samples' rows (:func:`vlmattn.summaries.pooled`). One row per check:
``check, model, question, expectation, observed, passed``.

* ``answers_correct``: share of samples of the config's named images whose answer equals the expected
  one (per model, question); expected 1.
* ``generated_answers_correct``: the same share over the generated corner pairs
  (:func:`vlmattn.images.synthetic.parse_corner_id`), random scenes like the held-out scenes of
  training; expected ≥ ``min_generated_accuracy`` (the training recipe's held-out target is 0.95).
* ``object_lift``: attention share on an object's vision tokens ÷ the object's area share (the
  spatial metric's ``lift`` of ``object`` regions), averaged over the object questions' samples,
  objects and the configured layers, with heads, steps and sinks pooled as configured. Trained
  model: ≥ ``min_object_lift``; untrained model: within ``untrained_lift_tolerance`` of 1.
* ``entropy_lower`` / ``effective_span_lower`` / ``gini_higher``: trained minus untrained mean of the
  concentration metric over the same samples and pooling; expected < 0, < 0, > 0.
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ["check", "model", "question", "expectation", "observed", "passed"]


def _pooled(table: pd.DataFrame, pooling: dict) -> pd.DataFrame:
    """Rows of the configured step pooling, head pooling and sink handling, and the chosen layers."""
    t = table[(table["step_pool"] == pooling["step_pool"]) & (table["head"].astype(str) == pooling["head"])]
    if "sinks" in t:
        t = t[t["sinks"] == pooling["sinks"]]
    layers = pooling["layers"]
    if layers != "all":
        t = t[t["layer"].isin(layers)]
    return t


def answer_checks(answers: pd.DataFrame, models: list[str], min_generated_accuracy: float) -> list[dict]:
    """``answers_correct`` rows per (model, question) of the named images, then
    ``generated_answers_correct`` rows of the corner-pair images (module docstring)."""
    from ..images.synthetic import parse_corner_id

    rows = []
    scored = answers[answers["expected"].notna() & answers["model"].isin(models)]
    generated = scored["image"].map(lambda i: parse_corner_id(str(i)) is not None)
    for check, part, expectation in (("answers_correct", scored[~generated], "== 1"),
                                     ("generated_answers_correct", scored[generated],
                                      f">= {min_generated_accuracy}")):
        for (model, question), g in part.groupby(["model", "question"], sort=True):
            acc = float(g["correct"].astype(str).str.lower().eq("true").mean())
            ok = acc == 1.0 if check == "answers_correct" else acc >= min_generated_accuracy
            rows.append(dict(check=check, model=model, question=question, expectation=expectation,
                             observed=acc, passed=ok))
    return rows


def object_lift(spatial: pd.DataFrame, model: str, questions: list[str], pooling: dict) -> float:
    """Mean lift of ground-truth object regions for ``model`` on ``questions``: over the samples' object
    rows of the chosen layers (``spatial``: the spatial summary's means)."""
    from ..summaries import pooled

    t = _pooled(spatial, pooling)
    t = t[(t["model"] == model) & t["question"].isin(questions) & (t["region_kind"] == "object")]
    if t.empty or t["n:lift"].sum() == 0:
        raise ValueError(f"no object rows in the spatial summary for model {model!r} and questions {questions}")
    return float(pooled(t.assign(_all=0), ["_all"], ["lift"])["lift"].iloc[0])


def concentration_delta(conc: pd.DataFrame, trained: str, untrained: str, questions: list[str], metric: str,
                        pooling: dict) -> float:
    """Trained minus untrained mean of ``metric`` over the same samples and pooling (``conc``: the
    concentration summary's means)."""
    from ..summaries import pooled

    t = _pooled(conc, pooling)
    t = t[t["question"].isin(questions)]
    means = pooled(t, ["model"], [metric])[metric]
    return float(means[trained] - means[untrained])


def validation_table(answers: pd.DataFrame, spatial: pd.DataFrame, concentration: pd.DataFrame,
                     cfg: dict) -> pd.DataFrame:
    """All checks for ``cfg`` (the ``validation`` config block)."""
    trained, untrained = cfg["trained"], cfg["untrained"]
    qs, pooling = cfg["object_questions"], cfg["pooling"]
    rows = answer_checks(answers, [trained], cfg["min_generated_accuracy"])
    lift_t = object_lift(spatial, trained, qs, pooling)
    lift_u = object_lift(spatial, untrained, qs, pooling)
    tol = cfg["untrained_lift_tolerance"]
    joined = ",".join(qs)
    rows.append(dict(check="object_lift", model=trained, question=joined,
                     expectation=f">= {cfg['min_object_lift']}", observed=lift_t,
                     passed=lift_t >= cfg["min_object_lift"]))
    rows.append(dict(check="object_lift", model=untrained, question=joined, expectation=f"1 ± {tol}",
                     observed=lift_u, passed=abs(lift_u - 1) <= tol))
    for check, metric, sign in (("entropy_lower", "norm_entropy", -1), ("effective_span_lower", "effective_span", -1),
                                ("gini_higher", "gini", 1)):
        d = concentration_delta(concentration, trained, untrained, qs, metric, pooling)
        rows.append(dict(check=check, model=f"{trained} - {untrained}", question=joined,
                         expectation="< 0" if sign < 0 else "> 0", observed=d, passed=d * sign > 0))
    return pd.DataFrame(rows, columns=COLUMNS)
