"""Maps with (almost) no attention on the vision tokens are undefined (NaN) in every metric, and pooled
maps are nan-aware means / maxima renormalised to sum 1."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.synthetic_attention import make_sample, metric_cfg
from vlmattn.maps import views
from vlmattn.metrics import METRICS, get_metric
from vlmattn.summaries import means, summarise_tables
from vlmattn.validation.checks import concentration_delta

BOX = [[0, 0, 32, 32]]


def sample_with_empty_maps(steps=3, layers=3, heads=2, n=16, seed=0):
    """Dirichlet maps with vision share 0.8, except: layer 0 head 0 has share 1e-6 at every step (below
    the default threshold), layer 1 head 1 is exactly zero at step 0 only, layer 2 is zero in every
    head and step. Returns the sample and the vision part ``[T, L, H, V]``."""
    p = np.random.default_rng(seed).dirichlet(np.ones(n), size=(steps, layers, heads)) * 0.8
    p[:, 0, 0] *= 1e-6 / 0.8
    p[0, 1, 1] = 0.0
    p[:, 2] = 0.0
    return make_sample(p, boxes=BOX, labels=["cat"]), p


ALL_STEPS = {"step_pooling": ["first", "last", "mean", "each"], "head_pooling": ["mean", "max"],
             "exclude_sinks": "both"}


def test_pooled_maps_sum_to_one_or_are_undefined():
    s, _ = sample_with_empty_maps()
    for v in views(s, metric_cfg("concentration", **ALL_STEPS)):
        total = v.p.sum(-1)  # [L, K]
        undefined = np.isnan(v.p).all(-1)
        assert (np.isnan(v.p).any(-1) == undefined).all(), "a map is either wholly defined or wholly NaN"
        np.testing.assert_allclose(total[~undefined], 1.0, atol=1e-12)
        # layer 2 has no valid member in any pooling; layer 0 head 0 is below the threshold
        assert undefined[2].all() and undefined[0, 0]
        # pooled heads of layers 0 and 1 have a valid member, so they are defined
        assert not undefined[:2, -2:].any(), (v.step_pool, v.step, v.sinks)


def test_pooled_maps_ignore_undefined_members():
    s, p = sample_with_empty_maps()
    cfg = metric_cfg("concentration", step_pooling=["first", "mean"], head_pooling=["mean", "max"],
                     exclude_sinks=False)
    first, mean = views(s, cfg)
    q = p / 0.8
    # layer 1 at step 0: head 1 is empty → the mean / max of heads is head 0's map alone
    np.testing.assert_allclose(first.p[1, 2], q[0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(first.p[1, 3], q[0, 1, 0], atol=1e-12)
    # layer 1 head 1 over steps: the mean of its two valid steps
    np.testing.assert_allclose(mean.p[1, 1], q[1:, 1, 1].mean(0), atol=1e-12)
    # layer 0: only head 1 is valid
    np.testing.assert_allclose(mean.p[0, 2], q[:, 0, 1].mean(0), atol=1e-12)


def test_entropy_equals_scipy_entropy_of_every_map():
    s, _ = sample_with_empty_maps()
    cfg = metric_cfg("concentration", **ALL_STEPS)
    table = get_metric("concentration").compute(s, cfg)
    expected = np.concatenate([stats.entropy(v.p, axis=-1).ravel() for v in views(s, cfg)])
    assert len(expected) == len(table)
    np.testing.assert_allclose(table["entropy"], expected, atol=1e-12)  # NaN where scipy gives NaN
    assert table["entropy"].isna().any() and table["entropy"].notna().any()


VALUE_COLUMNS = {
    "concentration": ["entropy", "norm_entropy", "gini", "effective_span", "peak_to_mean"],
    "spatial": ["mass", "lift", "com_x", "com_y", "var_x", "var_y"],
    "grounding": ["iou", "pointing", "energy"],
    "dynamics": ["entropy", "norm_entropy", "peak", "mass_top_left", "mass_centre", "mass_objects"],
    "hotspots": ["n_hotspots", "hotspot", "x", "y", "peak", "mass", "area", "n_tokens", "n_peaks"],
    "geometry": ["n_tokens", "area", "hull_area", "n_regions"],
    "information": ["mi", "mi_norm", "h_tokens", "h_steps", "mass"],
    "layer_profile": ["entropy", "entropy_mean", "entropy_min", "entropy_min_head"],
}


@pytest.mark.parametrize("name", list(VALUE_COLUMNS))
def test_undefined_maps_give_nan_in_every_metric(name):
    s, _ = sample_with_empty_maps()
    df = get_metric(name).compute(s, metric_cfg(name, exclude_sinks=False))
    cols = VALUE_COLUMNS[name]
    layer2 = df[df["layer"] == 2]
    assert len(layer2) > 0
    assert layer2[cols].isna().all().all(), layer2[cols].drop_duplicates()
    if name != "layer_profile":  # one row per pooled head there
        l0h0 = df[(df["layer"] == 0) & (df["head"].astype(str) == "0")]
        assert len(l0h0) > 0 and l0h0[cols].isna().all().all(), l0h0[cols].drop_duplicates()
    # pooled maps with a valid member give numbers
    others = df[(df["layer"] == 1) & df["head"].isin(["mean", "max"])]
    assert others[cols].notna().all().all(), others[cols].drop_duplicates()


def test_concentration_of_undefined_maps_is_not_one_hot_or_uniform():
    s, _ = sample_with_empty_maps()
    r = get_metric("concentration").compute(s, metric_cfg("concentration", exclude_sinks=False))
    r = r[r["layer"] == 2]
    assert r[["entropy", "gini", "effective_span", "peak_to_mean"]].isna().all().all()
    assert (r["vision_share"] == 0).all()  # the row's share itself is still reported


def test_layer_profile_pools_entropy_over_valid_heads():
    s, p = sample_with_empty_maps()
    df = get_metric("layer_profile").compute(s, metric_cfg("layer_profile", step_pooling=["first"],
                                                           head_pooling=["mean"], exclude_sinks=False))
    r = df.set_index("layer").loc[0]
    assert r["entropy_mean"] == pytest.approx(stats.entropy(p[0, 0, 1]))
    assert r["entropy_min_head"] == 1


def test_head_clusters_leave_undefined_heads_out():
    s, _ = sample_with_empty_maps()
    df = get_metric("head_clusters").compute(s, metric_cfg("head_clusters", exclude_sinks=False, k=2,
                                                                 step_pooling=["last", "mean"]))
    heads = df[df["kind"] == "head"]
    undefined = (heads["layer"] == 2) | ((heads["layer"] == 0) & (heads["head"] == "0"))
    assert heads.loc[undefined, ["cluster", "centroid_similarity"]].isna().all().all()
    assert heads.loc[~undefined, ["cluster", "centroid_similarity"]].notna().all().all()
    clusters = df[df["kind"] == "cluster"].drop_duplicates(["step_pool", "cluster"])
    for _, g in clusters.groupby("step_pool"):
        assert g["size"].sum() == (~undefined).sum() // 2  # two step poolings in the head rows


def test_sink_fraction_counts_valid_pairs_only():
    p = np.zeros((1, 1, 2, 16))
    p[0, 0, 0, 3] = 0.9  # head 0 one-hot on token 3; head 1 empty
    df = get_metric("sinks").compute(make_sample(p), metric_cfg("sinks")).set_index("token")
    assert df.loc[3, "fraction"] == 1.0
    assert df.loc[3, "mean_ratio"] == pytest.approx(16.0)
    assert bool(df.loc[3, "is_sink"])


@pytest.mark.parametrize(("share", "defined"), [(2e-4, True), (5e-5, False)])
def test_share_just_above_or_below_the_default_threshold(share, defined):
    p = np.random.default_rng(1).dirichlet(np.ones(16), size=(1, 1, 1)) * share
    r = get_metric("concentration").compute(make_sample(p), metric_cfg("concentration", exclude_sinks=False,
                                                                       head_pooling=[]))
    assert r["entropy"].notna().all() == defined
    assert r["entropy"].isna().all() == (not defined)
    np.testing.assert_allclose(r["vision_share"], share)


def test_threshold_is_one_shared_option():
    for name in METRICS:
        assert metric_cfg(name)["min_vision_share"] == 1e-4
    p = np.random.default_rng(1).dirichlet(np.ones(16), size=(1, 1, 1)) * 2e-4
    r = get_metric("concentration").compute(make_sample(p), metric_cfg("concentration", exclude_sinks=False,
                                                                       head_pooling=[], min_vision_share=1e-3))
    assert r["entropy"].isna().all()
    r = get_metric("concentration").compute(make_sample(p * 0), metric_cfg("concentration", exclude_sinks=False,
                                                                           head_pooling=[], min_vision_share=0))
    assert r["entropy"].isna().all()  # a map with no mass at all is always undefined


def test_validation_means_skip_undefined_rows():
    base = dict(image="a", question="shape", step_pool="first", head="mean", sinks="included")
    conc = pd.DataFrame([{**base, "model": "t", "layer": 0, "norm_entropy": 0.4},
                         {**base, "model": "t", "layer": 1, "norm_entropy": np.nan},
                         {**base, "model": "u", "layer": 0, "norm_entropy": 0.9}])
    conc = means(summarise_tables([conc], ["step_pool", "head", "sinks", "layer"], ["norm_entropy"]))
    pooling = {"step_pool": "first", "head": "mean", "sinks": "included", "layers": "all"}
    assert concentration_delta(conc, "t", "u", ["shape"], "norm_entropy", pooling) == pytest.approx(-0.5)
