"""Shared views: step pooling (incl. ``each``), sink exclusion, regions and grid helpers."""

import numpy as np
import pytest

from tests.synthetic_attention import MINIMAL, make_sample, metric_cfg, tile
from vlmattn.maps import (
    box_mask,
    find_sinks,
    label_tokens,
    local_maxima,
    quadrant_of,
    regions,
    sink_fraction,
    top_mass_mask,
    views,
)
from vlmattn.metrics import compute_table
from vlmattn.metrics.options import metric_params
from vlmattn.workflow import load_config

IDS = {"model": "m", "image": "i", "question": "q"}


def random_sample(seed=0, steps=3, layers=2, heads=3, n=16, share=0.8):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n), size=(steps, layers, heads)) * share
    return make_sample(p), p / share


def test_each_step_views_carry_step_labels_and_match_first_last_and_mean():
    s, p = random_sample()
    cfg = metric_cfg("concentration", step_pooling=["first", "last", "mean", "each"], head_pooling=["mean"],
                     exclude_sinks=False)
    vs = list(views(s, cfg))
    assert [(v.step_pool, v.step) for v in vs] == [("first", 0), ("last", 2), ("mean", None), ("each", 0),
                                                   ("each", 1), ("each", 2)]
    np.testing.assert_allclose(vs[0].p[:, :3], p[0], atol=1e-12)
    np.testing.assert_allclose(vs[1].p[:, :3], p[-1], atol=1e-12)
    np.testing.assert_allclose(vs[2].p[:, :3], p.mean(0), atol=1e-12)
    for t, v in enumerate(vs[3:]):
        np.testing.assert_allclose(v.p[:, :3], p[t], atol=1e-12)
        np.testing.assert_allclose(v.p[:, 3], p[t].mean(1), atol=1e-12)
        np.testing.assert_allclose(v.share, 0.8, atol=1e-12)
    assert vs[0].heads == ["0", "1", "2", "mean"]


def sink_sample(n=16, sink=5, weight=0.5, heads_with_sink=3, heads=4, layers=2):
    """Token ``sink`` gets ``weight`` of the row in the first ``heads_with_sink`` heads of every layer."""
    p = np.full((2, layers, heads, n), 1.0 / n)
    s = (1 - weight) * np.full(n, 1.0 / (n - 1))
    s[sink] = weight
    p[:, :, :heads_with_sink] = s
    return make_sample(p)


def test_sink_rule_fraction_of_layer_head_pairs():
    s = sink_sample()
    frac = sink_fraction(s, ratio=5, min_share=1e-4)
    assert frac[5] == pytest.approx(0.75)
    assert np.all(np.delete(frac, 5) == 0)
    assert find_sinks(s, 5, 0.5, 1e-4).tolist() == [i == 5 for i in range(16)]
    assert not find_sinks(s, 5, 0.8, 1e-4).any()
    assert not find_sinks(s, 9, 0.5, 1e-4).any()  # 0.5 < 9/16


def test_excluded_views_zero_sinks_then_renormalise():
    s = sink_sample()
    cfg = metric_cfg("concentration", exclude_sinks="both", step_pooling=["last"], head_pooling=[])
    assert cfg["sink_rule"] == {"ratio": 5, "min_fraction": 0.5, "min_vision_share": 1e-4}
    inc, exc = views(s, cfg)
    assert (inc.sinks, exc.sinks) == ("included", "excluded")
    assert np.all(exc.p[..., 5] == 0)
    np.testing.assert_allclose(exc.p.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(exc.p[0, 0, 0], 1 / 15, atol=1e-12)  # uniform over the other 15
    np.testing.assert_allclose(exc.share[0, :3], 0.5, atol=1e-12)  # raw share without the sink
    raw = list(views(s, {**cfg, "renormalize": False, "exclude_sinks": True}))[0]
    np.testing.assert_allclose(raw.p[0, 0, 0], 0.5 / 15, atol=1e-12)


def test_concentration_runs_with_sinks_and_each():
    s = sink_sample()
    df = compute_table("concentration", s, metric_cfg("concentration", exclude_sinks="both", step_pooling=["each"]),
                       IDS)
    assert set(df["sinks"]) == {"included", "excluded"}
    assert sorted(df["step"].unique()) == [0, 1]
    exc = df[(df["sinks"] == "excluded") & (df["head"] == "3")]
    # head 3 (no sink) is uniform; without token 5 it is uniform over the other 15 of 16 tokens
    np.testing.assert_allclose(exc["entropy"], np.log(15), atol=1e-12)
    np.testing.assert_allclose(exc["norm_entropy"], 1.0, atol=1e-12)  # log 15 / log N, N = 15 kept tokens
    assert (exc["n_vision"] == 15).all()
    inc = df[(df["sinks"] == "included") & (df["head"] == "0")]
    h = -(0.5 * np.log(0.5) + 15 * (0.5 / 15) * np.log(0.5 / 15))
    np.testing.assert_allclose(inc["entropy"], h, atol=1e-12)


def test_metric_params_adds_the_sink_rule_only_when_excluding():
    blocks = {"spatial": {"exclude_sinks": False}, "grounding": {"exclude_sinks": "both"},
              "sinks": {"ratio": 7, "min_fraction": 0.3}}
    metrics = load_config({**MINIMAL, "metrics": blocks})["metrics"]
    assert "sink_rule" not in metric_params("spatial", metrics)
    rule = metric_params("grounding", metrics)["sink_rule"]
    assert rule == {"ratio": 7, "min_fraction": 0.3, "min_vision_share": 1e-4}


def test_box_mask_centres_and_small_box_fallback():
    s = make_sample(tile(np.full(16, 1 / 16)))  # 4 × 4 grid, centres 0.125 … 0.875
    assert np.flatnonzero(box_mask(s, (0, 0, 0.5, 0.5))).tolist() == [0, 1, 4, 5]
    assert np.flatnonzero(box_mask(s, (0.3, 0.3, 0.35, 0.35))).tolist() == [5]  # no centre inside → token 5
    names = [r.name for r in regions(s, {"regions": {"roi": [0, 0, 1, 0.25]}, "objects": True})]
    assert names == ["image", "top_left", "top_right", "bottom_left", "bottom_right", "roi"]
    assert quadrant_of(0.5, 0.49) == "top_right"


def test_grid_helpers():
    s = make_sample(tile(np.full(16, 1 / 16)))
    mask = np.zeros(16, bool)
    mask[[0, 5, 15]] = True  # 0 and 5 touch diagonally
    assert label_tokens(mask, s, 4)[1] == 3
    assert label_tokens(mask, s, 8)[1] == 2
    p = np.zeros(16)
    p[[0, 10]] = [2, 1]
    assert np.flatnonzero(local_maxima(p, s, 3) & (p > 0)).tolist() == [0, 10]
    assert np.flatnonzero(local_maxima(p, s, 5) & (p > 0)).tolist() == [0]


def test_top_mass_mask_ties_and_levels():
    p = np.array([0.1, 0.4, 0.1, 0.4])
    assert top_mass_mask(p, 0.5).tolist() == [False, True, False, True]
    assert top_mass_mask(p, 0.8).tolist() == [False, True, False, True]
    assert top_mass_mask(np.full(10, 0.1), 0.5).sum() == 5
