"""The ``contrasts`` config block: schema defaults, cross-checks and the sample pairs."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests import REPO
from vlmattn.config import Sample
from vlmattn.contrasts.options import contrast_options, contrast_pairs
from vlmattn.errors import ConfigError
from vlmattn.workflow import load_config

BASE = yaml.safe_load((REPO / "config.yaml").read_text())
SEED = {"question": "top_left", "pairs": [["triangle_topleft", "square_only"]], "roi": "top_left"}


def config(contrasts: dict, corner: int = 0, **changes) -> dict:
    c = copy.deepcopy(BASE)
    c["images"]["synthetic"]["corner_pairs"] = corner
    c["contrasts"] = contrasts
    c.update(changes)
    return c


def test_defaults_and_seed_pair():
    cfg = load_config(config({"topleft": SEED}))
    cc = cfg["contrasts"]["topleft"]
    assert cc["step_pooling"] == "first" and cc["renormalize"] is True and cc["exclude_sinks"] is False
    assert cc["min_vision_share"] == 1e-4 and cc["head_pooling"] == "mean" and (cc["a"], cc["b"]) == ("A", "B")
    assert cc["statistics"] == {"confidence": 0.95, "n_resamples": 9999, "seed": 0, "alpha": 0.05,
                                "method": "bca", "alternative": "two-sided"}
    assert cc["divergence"] == {"epsilon": 1e-6, "top_fraction": 0.1}
    pairs = contrast_pairs(cfg, "topleft")
    assert pairs == [(Sample(m, "triangle_topleft", "top_left"), Sample(m, "square_only", "top_left"))
                     for m in ("toy_llava", "toy_llava_untrained")]
    assert contrast_pairs(cfg, "topleft", model="toy_llava") == pairs[:1]
    assert cc["encoder"] == {"sources": ["received", "cls"], "head_pooling": "mean"}
    assert cc["rollout"] == {"source": "cls"}
    assert cc["causal"] == {"enabled": True, "ks": [1, 3, 5], "n_random": 200, "draw": "ranked", "mode": "zero",
                            "seed": 0}
    assert load_config(config({}))["contrasts"] == {}
    default = load_config(BASE)
    assert list(default["contrasts"]) == ["triangle_topleft", "corner"]
    assert len(contrast_pairs(default, "corner",
                              model="toy_llava")) == default["images"]["synthetic"]["corner_pairs"] >= 16


def test_corner_pairs_and_question_lists():
    block = {"question": "top_left", "pairs": "corner_pairs", "roi": [0.0, 0.0, 0.5, 0.5]}
    cfg = load_config(config({"corner": block}, corner=3))
    pairs = contrast_pairs(cfg, "corner", model="toy_llava")
    assert [(a.image, b.image) for a, b in pairs] == [(f"corner_{i:03d}_a", f"corner_{i:03d}_b") for i in range(3)]
    assert len(contrast_pairs(cfg, "corner")) == 6
    # a question without an images list is asked of the corner pairs too
    cfg = load_config(config({"corner": {**block, "question": ["top_left", "any"], "causal": {"enabled": False}}},
                             corner=2,
                             questions={**BASE["questions"], "any": {"text": "Anything?"}}))
    got = contrast_pairs(cfg, "corner", model="toy_llava")
    assert [(a.question, a.image) for a, _ in got] == [("top_left", "corner_000_a"), ("top_left", "corner_001_a"),
                                                      ("any", "corner_000_a"), ("any", "corner_001_a")]


def test_causal_check_needs_the_expected_answer_of_each_a_image():
    questions = {**BASE["questions"], "any": {"text": "Anything?", "images": ["triangle_topleft", "square_only"]}}
    block = {**SEED, "question": "any"}
    with pytest.raises(ConfigError, match=r"contrasts\.c\.causal: image 'triangle_topleft' of condition A has no "
                                          r"expected answer to question 'any'"):
        load_config(config({"c": block}, questions=questions))
    assert load_config(config({"c": {**block, "causal": {"enabled": False}}}, questions=questions))


@pytest.mark.parametrize("block, corner, message", [
    ({**SEED, "question": "nope"}, 0, r"contrasts\.c\.question: unknown question 'nope'"),
    ({**SEED, "pairs": [["triangle_topleft", "ghost"]]}, 0, r"contrasts\.c\.pairs\[0\]: unknown image 'ghost'"),
    ({**SEED, "pairs": [["square_only", "square_only"]]}, 0, r"contrasts\.c\.pairs\[0\]: both images"),
    ({**SEED, "pairs": [["triangle_topleft", "green_circle"]]}, 0,
     r"contrasts\.c: question 'top_left' is not asked of image 'green_circle'"),
    ({**SEED, "pairs": "corner_pairs"}, 0, r"contrasts\.c\.pairs: corner_pairs needs images\.synthetic\.corner_pairs"),
    ({**SEED, "roi": [0.5, 0.0, 0.2, 1.0]}, 0, r"contrasts\.c\.roi: need x0 < x1"),
    ({**SEED, "roi": "middle"}, 0, r"contrasts\.c\.roi: 'middle' is not valid: expected region of interest"),
    ({**SEED, "pairs": [["triangle_topleft"]]}, 0, r"contrasts\.c\.pairs"),
    ({**SEED, "statistics": {"method": "normal"}}, 0, r"contrasts\.c\.statistics\.method"),
    ({**SEED, "step_pooling": "each"}, 0, r"contrasts\.c\.step_pooling"),
    ({**SEED, "extra": 1}, 0, r"contrasts\.c"),
    ({"pairs": "corner_pairs", "roi": "top_left"}, 2, r"contrasts\.c"),
])
def test_errors_name_the_key(block, corner, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(config({"c": block}, corner=corner))
    assert "\n" not in str(e.value)


def test_explicit_samples_must_hold_both_sides():
    samples = [{"model": m, "image": "triangle_topleft", "question": "top_left"} for m in BASE["models"]]
    with pytest.raises(ConfigError, match="not asked of image 'square_only'"):
        load_config(config({"c": SEED}, samples=samples))
    samples += [{"model": m, "image": "square_only", "question": "top_left"} for m in BASE["models"]]
    load_config(config({"c": SEED}, samples=samples))


def test_bad_id_and_unknown_names():
    with pytest.raises(ConfigError, match="contrasts"):
        load_config(config({"bad name": SEED}))
    cfg = load_config(config({"c": SEED}))
    with pytest.raises(ConfigError, match="unknown contrast"):
        contrast_pairs(cfg, "other")
    with pytest.raises(ConfigError, match="unknown model"):
        contrast_pairs(cfg, "c", model="ghost")


def test_contrast_options_feed_the_library():
    import numpy as np

    from tests.synthetic_attention import make_sample
    from vlmattn.contrasts import divergence, heads, quadrants

    cfg = load_config(config({"c": {**SEED, "exclude_sinks": True, "statistics": {"n_resamples": 99}}},
                             metrics={**BASE["metrics"], "sinks": {"ratio": 3}}))
    o = contrast_options(cfg, "c")
    assert o["roi"] == "top_left" and o["head_pooling"] == "mean"
    assert o["maps"] == {"step_pooling": "first", "renormalize": True, "min_vision_share": 1e-4, "exclude_sinks": True,
                         "sink_rule": {"ratio": 3, "min_fraction": 0.5, "min_vision_share": 1e-4}}
    assert contrast_options(load_config(config({"c": SEED})), "c")["maps"]["sink_rule"] is None
    rng = np.random.default_rng(0)
    a = [make_sample(rng.dirichlet(np.ones(16), size=(1, 2, 2))) for _ in range(3)]
    b = [make_sample(rng.dirichlet(np.ones(16), size=(1, 2, 2))) for _ in range(3)]
    assert len(heads.head_contrast(a, b, o["roi"], **o["maps"], **o["statistics"])) == 4
    assert len(quadrants.quadrant_shift(a, b, **o["maps"], head_pooling=o["head_pooling"], per_layer=False,
                                        **o["statistics"])) == 4
    assert len(divergence.divergence_table(a, b, **o["maps"], head_pooling=o["head_pooling"], **o["divergence"])) == 9
    with pytest.raises(ConfigError, match="unknown contrast"):
        contrast_options(cfg, "other")
