"""Contrast maps, per-head ROI contrast, quadrant shift and divergences on hand-made samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import directed_hausdorff, jensenshannon
from scipy.stats import entropy

from tests.synthetic_attention import make_sample, metric_cfg, one_hot, tile
from vlmattn.contrasts import divergence, heads, pairs, quadrants
from vlmattn.maps import QUADRANTS, box_mask
from vlmattn.metrics.spatial import compute as spatial_compute

STATS = dict(confidence=0.95, n_resamples=9999, seed=0, alpha=0.05, method="bca")
MAPS = dict(step_pooling="first", renormalize=True, min_vision_share=1e-4)
TOP_LEFT_4x4 = [0, 1, 4, 5]  # row-major 4×4 grid: rows 0-1, columns 0-1
PLANTED = (1, 2)  # (layer, head)


def planted_pairs(n_pairs=12, n_layers=2, n_heads=3, seed=1):
    """Pairs of 4×4-token samples with Dirichlet maps everywhere; in A the planted head also puts half
    its mass evenly on the top-left quadrant."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    tl = np.zeros(16)
    tl[TOP_LEFT_4x4] = 0.25
    for _ in range(n_pairs):
        va = rng.dirichlet(np.ones(16), size=(2, n_layers, n_heads))  # [T, L, H, V]
        vb = rng.dirichlet(np.ones(16), size=(2, n_layers, n_heads))
        va[:, PLANTED[0], PLANTED[1]] = 0.5 * va[:, PLANTED[0], PLANTED[1]] + 0.5 * tl
        a.append(make_sample(va))
        b.append(make_sample(vb))
    return a, b


# ------------------------------------------------------------------------------------------- maps
def test_roi_box_names_and_boxes():
    assert pairs.roi_box("top_left") == QUADRANTS["top_left"]
    assert pairs.roi_box([0.1, 0.2, 0.3, 0.4]) == (0.1, 0.2, 0.3, 0.4)
    for bad in ("middle", [0.5, 0.0, 0.5, 1.0], [0, 0, 1], [0, 0, 1.5, 1]):
        with pytest.raises(ValueError):
            pairs.roi_box(bad)


def test_pooled_maps_first_step_and_nan_rule():
    v = np.zeros((2, 1, 2, 4))
    v[0, 0, 0] = [0.2, 0.2, 0.0, 0.0]  # renormalised to [0.5, 0.5, 0, 0]
    v[1, 0, 0] = [0.0, 0.0, 0.0, 1.0]
    v[0, 0, 1] = [1e-6, 0, 0, 0]  # below min_vision_share: undefined
    p = pairs.pooled_maps(make_sample(v), **MAPS)
    assert p.shape == (1, 2, 4)
    np.testing.assert_allclose(p[0, 0], [0.5, 0.5, 0, 0])
    assert np.isnan(p[0, 1]).all()
    pm = pairs.pooled_maps(make_sample(v), **{**MAPS, "step_pooling": "mean"})
    np.testing.assert_allclose(pm[0, 0], [0.25, 0.25, 0, 0.5])


def test_paired_checks_lengths_and_grids():
    s4, s9 = make_sample(tile(np.full(4, 0.25))), make_sample(tile(np.full(9, 1 / 9)))
    with pytest.raises(ValueError, match="same number"):
        list(pairs.paired([s4, s4], [s4]))
    with pytest.raises(ValueError, match="no pairs"):
        list(pairs.paired([], []))
    with pytest.raises(ValueError, match="grid"):
        list(pairs.paired([s4], [s9]))


# ------------------------------------------------------------------------------------------ heads
def test_roi_mass_matches_spatial_metric_quadrant_mass():
    rng = np.random.default_rng(0)
    s = make_sample(rng.dirichlet(np.ones(16), size=(1, 2, 3)))
    m = heads.roi_mass(s, "top_left", **MAPS)
    assert m.shape == (2, 3)
    cfg = metric_cfg("spatial", step_pooling=["first"], head_pooling=[], exclude_sinks=False)
    t = spatial_compute(s, cfg)
    t = t[t["region"] == "top_left"]
    np.testing.assert_allclose(m.ravel(), t["mass"].to_numpy())
    p = pairs.pooled_maps(s, **MAPS)
    np.testing.assert_allclose(m, p[..., TOP_LEFT_4x4].sum(-1))
    np.testing.assert_array_equal(np.flatnonzero(box_mask(s, QUADRANTS["top_left"])), TOP_LEFT_4x4)
    np.testing.assert_allclose(heads.roi_mass(s, [0.0, 0.0, 0.5, 0.5], **MAPS), m)


def test_planted_head_ranks_first_and_null_heads_are_not_significant():
    a, b = planted_pairs()
    t = heads.head_contrast(a, b, "top_left", **MAPS, **STATS)
    assert list(t.columns) == heads.COLUMNS
    assert len(t) == 6 and (t["n_pairs"] == 12).all()
    top = t.loc[t["rank"] == 1].iloc[0]
    assert (top["layer"], top["head"]) == PLANTED
    assert top["significant"] and top["p_adj"] < 0.01 and top["ci_low"] > 0 and top["effect_size"] > 1
    assert top["mean_a"] > 0.5 and top["mean_b"] < 0.45
    null = t[(t["layer"] != PLANTED[0]) | (t["head"] != PLANTED[1])]
    assert not null["significant"].any()
    assert (null["ci_low"] < 0).all() and (null["ci_high"] > 0).all()
    np.testing.assert_allclose(t["diff"], t["mean_a"] - t["mean_b"], atol=1e-12)
    # generators are consumed pair by pair and give the same table
    t2 = heads.head_contrast(iter(a), (s for s in b), "top_left", **MAPS, **STATS)
    assert t2.equals(t)


def test_undefined_map_drops_the_pair_in_that_cell_only():
    a, b = planted_pairs(n_pairs=5)
    a[0].decode[:, 0, 0, :] = 0.0  # no vision share at all in (layer 0, head 0) of pair 0's A
    ma, mb = heads.roi_masses(a, b, "top_left", **MAPS)
    assert np.isnan(ma[0, 0, 0]) and not np.isnan(ma[0, 0, 1])
    t = heads.head_contrast(a, b, "top_left", **MAPS, **{**STATS, "n_resamples": 199})
    assert t.set_index(["layer", "head"]).loc[(0, 0), "n_pairs"] == 4
    assert (t["n_pairs"] == 5).sum() == 5


def test_exclude_sinks_zeroes_each_samples_sink_before_renormalising():
    v = np.full((1, 2, 2, 4), 0.1)
    v[..., 3] = 0.7  # token 3 is a sink in every (layer, head)
    s = make_sample(v)
    rule = {"ratio": 2.0, "min_fraction": 0.5, "min_vision_share": 1e-4}
    np.testing.assert_array_equal(pairs.sink_keep(s, True, rule), [True, True, True, False])
    assert pairs.sink_keep(s, False, None) is None
    m = heads.roi_mass(s, [0.0, 0.0, 1.0, 0.5], **MAPS, keep=pairs.sink_keep(s, True, rule))  # tokens 0, 1
    np.testing.assert_allclose(m, 2 / 3)
    with pytest.raises(ValueError, match="sink_rule"):
        pairs.sink_keep(s, True, None)


# -------------------------------------------------------------------------------------- quadrants
def test_quadrant_index_partitions_every_grid():
    for rows, cols in ((4, 4), (3, 3), (1, 1), (2, 5)):
        s = make_sample(tile(np.full(rows * cols, 1.0 / (rows * cols))), grid=(rows, cols))
        k = quadrants.quadrant_index(s.token_centres)
        assert k.shape == (rows * cols,) and set(k) <= {0, 1, 2, 3}
    s = make_sample(tile(np.full(9, 1 / 9)), grid=(3, 3))
    # the centre token (0.5, 0.5) is bottom_right; the middle of the top row (0.5, 1/6) top_right
    assert quadrants.QUADRANT_NAMES[quadrants.quadrant_index(s.token_centres)[4]] == "bottom_right"
    assert quadrants.QUADRANT_NAMES[quadrants.quadrant_index(s.token_centres)[1]] == "top_right"


def test_quadrant_masses_sum_to_one_and_nan():
    rng = np.random.default_rng(3)
    s = make_sample(rng.dirichlet(np.ones(16), size=(1, 2, 3)))
    q = quadrants.sample_quadrants(s, **MAPS, head_pooling="mean", per_layer=True)
    assert q.shape == (2, 4)
    np.testing.assert_allclose(q.sum(-1), 1.0)
    raw = quadrants.sample_quadrants(s, **{**MAPS, "renormalize": False}, head_pooling="max", per_layer=False)
    assert raw.shape == (1, 4)
    np.testing.assert_allclose(raw.sum(-1), 1.0)
    index = quadrants.quadrant_index(s.token_centres)
    p = np.array([[np.nan] * 16, np.zeros(16), one_hot(5, 16)])
    out = quadrants.quadrant_masses(p, index)
    assert np.isnan(out[:2]).all()
    np.testing.assert_allclose(out[2], [1, 0, 0, 0])


def test_planted_quadrant_shift_is_recovered():
    a, b = planted_pairs()
    t = quadrants.quadrant_shift(a, b, **MAPS, head_pooling="mean", per_layer=False, **STATS)
    assert list(t.columns) == quadrants.COLUMNS
    assert list(t["layer"]) == ["all"] * 4 and list(t["quadrant"]) == list(QUADRANTS)
    np.testing.assert_allclose(t["mean_a"].sum(), 1.0)
    np.testing.assert_allclose(t["mean_b"].sum(), 1.0)
    np.testing.assert_allclose(t["diff"].sum(), 0.0, atol=1e-12)
    tl = t.set_index("quadrant").loc["top_left"]
    assert tl["rank"] == 1 and tl["significant"] and tl["diff"] > 0.03
    per = quadrants.quadrant_shift(a, b, **MAPS, head_pooling="mean", per_layer=True, **STATS)
    assert len(per) == 8 and list(per["layer"].unique()) == [0, 1]
    got = per.set_index(["layer", "quadrant"])
    assert got.loc[(1, "top_left"), "significant"]  # the planted head's layer
    assert got.loc[(1, "top_left"), "diff"] > got.loc[(0, "top_left"), "diff"]


# ------------------------------------------------------------------------------------- divergence
def test_smoothing_formula():
    p = np.array([0.0, 0.25, 0.75, 0.0])
    eps = 1e-3
    np.testing.assert_allclose(divergence.smooth(p, eps), (p + eps) / (1 + 4 * eps))
    np.testing.assert_allclose(divergence.smooth(2 * p, eps).sum(), 1.0)  # normalised first
    with pytest.raises(ValueError):
        divergence.smooth(p, 0.0)


def test_kl_and_js_match_scipy():
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(25), size=(3, 2))
    q = rng.dirichlet(np.ones(25), size=(3, 2))
    p[0, 0, :5] = 0.0  # zeros: smoothing keeps KL finite
    eps = 1e-4
    kl = divergence.kl_divergence(p, q, epsilon=eps)
    js = divergence.js_divergence(p, q, epsilon=eps)
    assert kl.shape == js.shape == (3, 2)
    ps, qs = divergence.smooth(p, eps), divergence.smooth(q, eps)
    for i in np.ndindex(3, 2):
        np.testing.assert_allclose(kl[i], entropy(ps[i], qs[i]), rtol=1e-12)
        np.testing.assert_allclose(js[i], jensenshannon(ps[i], qs[i]) ** 2, rtol=1e-9)
    assert ((js >= 0) & (js <= np.log(2))).all()


def test_closed_forms():
    V, eps = 16, 1e-6
    p = np.full(V, 1 / V)
    assert divergence.kl_divergence(p, p, epsilon=eps) == pytest.approx(0.0, abs=1e-15)
    assert divergence.js_divergence(p, p, epsilon=eps) == pytest.approx(0.0, abs=1e-15)
    a, b = one_hot(0, V), one_hot(9, V)
    expected = np.log((1 + eps) / eps) / (1 + V * eps)
    assert divergence.kl_divergence(a, b, epsilon=eps) == pytest.approx(expected, rel=1e-12)
    assert divergence.kl_divergence(b, a, epsilon=eps) == pytest.approx(expected, rel=1e-12)
    # disjoint maps: JS → ln 2 as ε → 0
    assert divergence.js_divergence(a, b, epsilon=1e-12) == pytest.approx(np.log(2), rel=1e-9)
    assert np.isnan(divergence.kl_divergence(np.full(V, np.nan), p, epsilon=eps))


def test_top_tokens_and_hausdorff():
    p = np.array([0.1, 0.4, 0.1, 0.4])
    np.testing.assert_array_equal(divergence.top_tokens(p, 0.5), [1, 3])
    np.testing.assert_array_equal(divergence.top_tokens(p, 0.01), [1])  # at least one
    np.testing.assert_array_equal(divergence.top_tokens(np.full(4, 0.25), 0.5), [0, 1])  # ties: token order
    assert len(divergence.top_tokens(np.full(4, np.nan), 0.5)) == 0
    a, b = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 1.0]])
    ab, ba, h = divergence.hausdorff(a, b)
    assert (ab, ba, h) == (1.0, 5.0, 5.0)
    assert ab == directed_hausdorff(a, b)[0] and ba == directed_hausdorff(b, a)[0]
    assert np.isnan(divergence.hausdorff(a, np.zeros((0, 2)))).all()


def test_divergence_table_per_layer_and_overall():
    V = 16
    va = tile(one_hot(0, V), n_layers=2, n_heads=2)  # top-left corner token (row 0, col 0)
    vb = tile(one_hot(15, V), n_layers=2, n_heads=2)  # bottom-right (row 3, col 3)
    vb[:, 0] = 1 / V  # layer 0 of B: uniform
    a, b = make_sample(va), make_sample(vb)
    np.testing.assert_array_equal(divergence.grid_coords(a)[[0, 5, 15]], [[0, 0], [1, 1], [3, 3]])
    t = divergence.divergence_table([a, a], [b, a], **MAPS, head_pooling="mean", epsilon=1e-6, top_fraction=1 / V)
    assert list(t.columns) == divergence.COLUMNS
    assert list(t["layer"]) == ["0", "1", "all"] * 2 and list(t["pair"]) == [0] * 3 + [1] * 3
    first = t[t["pair"] == 0].set_index("layer")
    assert first.loc["1", "kl_ab"] == pytest.approx(np.log((1 + 1e-6) / 1e-6) / (1 + V * 1e-6))
    assert first.loc["1", "hausdorff"] == pytest.approx(np.hypot(3, 3))
    assert first.loc["1", "hausdorff_ab"] == first.loc["1", "hausdorff_ba"]
    assert first.loc["0", "hausdorff"] == 0.0  # B's top token under a uniform map is token 0 (ties)
    assert (first["js"] > 0).all()
    same = t[t["pair"] == 1]
    np.testing.assert_allclose(same[["kl_ab", "kl_ba", "js", "hausdorff"]].to_numpy(), 0.0, atol=1e-12)


# ---------------------------------------------------------------------------------- object ROI
def test_object_roi_is_the_box_of_what_a_has_and_b_lacks():
    a, b = planted_pairs(n_pairs=6)
    other = ([40, 40, 60, 60], "circle", "blue")
    for s in a:  # A: a red square in the top-left quadrant (pixels of the 64×64 image) and the other object
        s.boxes = np.array([[0, 0, 32, 32], other[0]], np.float32)
        s.labels, s.colours = ["square", other[1]], ["red", other[2]]
    for s in b:
        s.boxes, s.labels, s.colours = np.array([other[0]], np.float32), [other[1]], [other[2]]
    assert pairs.object_box(a[0], b[0]) == (0.0, 0.0, 0.5, 0.5)
    assert pairs.pair_roi(a[0], b[0], "object") == pairs.pair_roi(a[0], b[0], "top_left")
    by_object = heads.head_contrast(a, b, "object", **MAPS, **STATS)
    by_quadrant = heads.head_contrast(a, b, "top_left", **MAPS, **STATS)
    assert by_object.equals(by_quadrant)
    with pytest.raises(ValueError, match="roi 'object': image .* holds no object that .* lacks"):
        pairs.object_box(b[0], b[1])


def test_quadrant_bh_runs_over_two_families(tmp_path):
    """``quadrants.csv`` holds two BH families: the four pooled ``all`` rows, and the per-layer rows."""
    from vlmattn.contrasts import analyses
    from vlmattn.stats import bh_adjust
    from vlmattn.store import write_sample

    a, b = planted_pairs()
    files = {}
    for name, samples in (("a", a), ("b", b)):
        files[name] = []
        for i, s in enumerate(samples):
            path = tmp_path / f"{name}{i}.h5"
            write_sample(path, s, attention_dtype="float32")
            files[name].append(str(path))
    options = {"maps": MAPS, "head_pooling": "mean", "statistics": STATS}
    t = analyses.run("quadrants", files["a"], files["b"], options)["quadrants"]
    pooled, per_layer = t[t["layer"].astype(str) == "all"], t[t["layer"].astype(str) != "all"]
    assert len(pooled) == 4 and len(per_layer) == 8
    for family in (pooled, per_layer):
        np.testing.assert_allclose(family["p_adj"], bh_adjust(family["p"].to_numpy()), rtol=1e-12)
    # one family of twelve would give other adjusted p-values
    assert not np.allclose(t["p_adj"], bh_adjust(t["p"].to_numpy()), rtol=1e-9)
