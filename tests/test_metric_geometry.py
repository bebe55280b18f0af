"""geometry: mass-level set area, convex hull (vs the shoelace formula) and connected regions."""

import numpy as np
import pytest

from tests.synthetic_attention import make_sample, metric_cfg, one_hot, tile
from vlmattn.metrics.geometry import compute, hull_area

CFG = {"step_pooling": ["last"], "head_pooling": [], "exclude_sinks": False, "levels": [0.5, 1.0]}


def config(**changes) -> dict:
    """The geometry block of CFG with ``changes``, schema defaults filled in."""
    return metric_cfg("geometry", **{**CFG, **changes})


def shoelace(xy):
    x, y = np.asarray(xy).T
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_one_hot_and_uniform():
    df = compute(make_sample(tile(one_hot(6, 16))), config()).set_index("level")
    assert df.loc[0.5, ["n_tokens", "area", "hull_area", "n_regions"]].tolist() == [1, 1 / 16, 0.0, 1]
    df = compute(make_sample(tile(np.full(16, 1 / 16))), config()).set_index("level")
    assert df.loc[0.5, "n_tokens"] == 8 and df.loc[0.5, "area"] == 0.5
    # all 16 centres span [1/8, 7/8]²
    assert df.loc[1.0, "hull_area"] == pytest.approx(0.75**2, abs=1e-12)
    assert df.loc[1.0, "n_regions"] == 1


def test_hull_matches_shoelace_and_degenerate_sets():
    p = np.zeros(16)
    p[[0, 3, 13]] = [0.5, 0.3, 0.2]  # centres (1/8,1/8), (7/8,1/8), (3/8,7/8)
    s = make_sample(tile(p))
    r = compute(s, config(levels=[1.0])).iloc[0]
    assert r["hull_area"] == pytest.approx(shoelace(s.token_centres[[0, 3, 13]]), abs=1e-12)
    assert r["n_regions"] == 3
    assert hull_area(s.token_centres[[0, 1, 2]]) == 0.0  # collinear
    assert hull_area(s.token_centres[[0, 5]]) == 0.0


def test_connectivity_counts_regions():
    p = np.zeros(16)
    p[[0, 5]] = 0.5  # diagonal neighbours
    s = make_sample(tile(p))
    assert compute(s, config(levels=[1.0])).iloc[0]["n_regions"] == 2
    assert compute(s, config(levels=[1.0], connectivity=8)).iloc[0]["n_regions"] == 1
    assert compute(s, config(levels=[0.5])).iloc[0]["n_regions"] == 1  # tie → the first token only
