"""spatial: centre of mass, variance, region mass and lift against closed forms and numpy weighted moments."""

import numpy as np
import pytest

from tests.synthetic_attention import make_sample, metric_cfg, one_hot, tile
from vlmattn.config import validate
from vlmattn.errors import ConfigError
from vlmattn.metrics import compute_table
from vlmattn.metrics.options import check
from vlmattn.metrics.spatial import compute

IDS = {"model": "m", "image": "i", "question": "q"}
CFG = {"step_pooling": ["last"], "head_pooling": ["mean"], "exclude_sinks": False, "regions": {}}


def config(**changes) -> dict:
    """The spatial block of CFG with ``changes``, schema defaults filled in."""
    return metric_cfg("spatial", **{**CFG, **changes})


def rows(df, region, head="0"):
    return df[(df["region"] == region) & (df["head"] == head)].iloc[0]


@pytest.mark.parametrize("n", [4, 6])
def test_uniform_map(n):
    df = compute(make_sample(tile(np.full(n * n, 1 / n**2))), config())
    r = rows(df, "image")
    assert (r["com_x"], r["com_y"]) == pytest.approx((0.5, 0.5), abs=1e-12)
    # discrete uniform over centres (i + ½)/n: variance (1 − 1/n²)/12
    assert (r["var_x"], r["var_y"]) == pytest.approx(((1 - 1 / n**2) / 12,) * 2, abs=1e-12)
    for q in ("top_left", "top_right", "bottom_left", "bottom_right"):
        assert rows(df, q)["mass"] == pytest.approx(0.25, abs=1e-12)
        assert rows(df, q)["lift"] == pytest.approx(1.0, abs=1e-12)
        assert rows(df, q)["area_share"] == pytest.approx(0.25, abs=1e-12)


def test_one_hot_map():
    df = compute(make_sample(tile(one_hot(6, 16))), config())  # row 1, col 2 of a 4 × 4 grid
    r = rows(df, "image")
    assert (r["com_x"], r["com_y"], r["var_x"], r["var_y"]) == pytest.approx((0.625, 0.375, 0, 0), abs=1e-12)
    assert rows(df, "top_right")["mass"] == 1.0
    assert rows(df, "top_right")["lift"] == pytest.approx(4.0)
    assert rows(df, "top_left")["mass"] == 0.0
    assert np.isnan(rows(df, "top_left")["com_x"])


def test_moments_match_numpy_weighted_statistics():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(36), size=(1, 2, 3))
    s = make_sample(p, boxes=[[0, 0, 40, 30]], labels=["cat"], colours=["red"])
    df = compute(s, config(regions={"band": [0, 0.5, 1, 0.7]}))
    c = s.token_centres
    for region, mask in (("image", np.ones(36, bool)), ("band", (c[:, 1] >= 0.5) & (c[:, 1] < 0.7)),
                         ("red_cat", (c[:, 0] < 40 / 64) & (c[:, 1] < 30 / 64))):
        for layer in range(2):
            for head in range(3):
                w = p[0, layer, head] * mask
                r = df[(df["region"] == region) & (df["layer"] == layer) & (df["head"] == str(head))].iloc[0]
                assert r["mass"] == pytest.approx(w.sum(), abs=1e-12)
                cov = np.cov(c[mask].T, aweights=w[mask], bias=True)
                com = np.average(c[mask], axis=0, weights=w[mask])
                assert (r["com_x"], r["com_y"]) == pytest.approx(tuple(com), abs=1e-12)
                assert (r["var_x"], r["var_y"]) == pytest.approx((cov[0, 0], cov[1, 1]), abs=1e-12)
                assert r["lift"] == pytest.approx(w.sum() / (mask.sum() / 36), abs=1e-12)
    assert set(df.loc[df["region"] == "red_cat", "region_kind"]) == {"object"}


def test_raw_weights_and_sinks_excluded():
    p = np.full(16, 0.5 / 15)
    p[0] = 0.5  # a sink in the top-left corner in every head
    s = make_sample(tile(p * 0.6, n_layers=2, n_heads=2))
    df = compute_table("spatial", s, config(exclude_sinks="both", renormalize=False), IDS)
    inc = df[(df["sinks"] == "included") & (df["region"] == "top_left") & (df["head"] == "0")]
    exc = df[(df["sinks"] == "excluded") & (df["region"] == "top_left") & (df["head"] == "0")]
    np.testing.assert_allclose(inc["mass"], 0.6 * (0.5 + 3 * 0.5 / 15), atol=1e-12)
    np.testing.assert_allclose(exc["mass"], 0.6 * 3 * 0.5 / 15, atol=1e-12)
    np.testing.assert_allclose(exc["lift"], (3 / 15) / 0.25, atol=1e-12)  # lift uses the mass share


def test_region_box_must_be_ordered():
    cfg = validate({"questions": {"q": {"text": "x"}},
                    "models": {"m": {"family": "llava", "build": {"kind": "random"}}},
                    "metrics": {"spatial": {"regions": {"bad": [0.5, 0, 0.2, 1]}}}})
    with pytest.raises(ConfigError, match="metrics.spatial.regions.bad"):
        check(cfg)
