"""The 7B levers: hotspots.max_per_map and per_head (rows of the pooled heads only), against the full
tables; and the stacked computations against their one-map references."""

import numpy as np
import pandas as pd
import pytest

from bench.scale import synthetic_sample
from tests.synthetic_attention import metric_cfg
from vlmattn.maps import count_components, hull_areas, label_tokens
from vlmattn.metrics import get_metric
from vlmattn.metrics.geometry import hull_area
from vlmattn.metrics.hotspots import find_hotspots

SHAPE = (2, 3, 8, 5, 4, 4)  # layers, heads, grid, text before / after, steps
MAP_KEYS = ["step_pool", "step", "sinks", "layer", "head"]
PER_HEAD = ["concentration", "spatial", "grounding", "dynamics", "hotspots", "information", "geometry"]


def sample():
    s = synthetic_sample(np.random.default_rng(3), "img", "q", size=64, shape=SHAPE)
    s.decode[:, 0, 1, 5:69] = 0.0  # a head without vision attention: undefined maps
    return s


def test_max_per_map_keeps_the_strongest_hotspots_of_each_map():
    s = sample()
    full = get_metric("hotspots").compute(s, metric_cfg("hotspots", step_pooling=["first", "mean"], percentile=60))
    top = get_metric("hotspots").compute(s, metric_cfg("hotspots", step_pooling=["first", "mean"], percentile=60,
                                                       max_per_map=2))
    assert full["n_hotspots"].max() > 2  # the cap bites
    expected = full[full["hotspot"].isna() | (full["hotspot"] < 2)].reset_index(drop=True)
    pd.testing.assert_frame_equal(top, expected)
    # strongest first within each map; n_hotspots still counts every hotspot
    for _, g in top.dropna(subset=["hotspot"]).groupby(MAP_KEYS, dropna=False):
        assert g["peak"].is_monotonic_decreasing
    assert (top["n_hotspots"] > 2).any()


@pytest.mark.parametrize("name", PER_HEAD)
def test_per_head_false_gives_the_pooled_head_rows(name):
    s = sample()
    block = {"exclude_sinks": "both"}
    full = get_metric(name).compute(s, metric_cfg(name, **block))
    pooled = get_metric(name).compute(s, metric_cfg(name, **block, per_head=False))
    expected = full[full["head"].isin(["mean", "max"])].reset_index(drop=True)
    assert len(pooled) and set(pooled["head"]) == {"mean", "max"}
    pd.testing.assert_frame_equal(pooled, expected)


def test_per_head_false_without_a_head_pooling_is_an_error():
    with pytest.raises(ValueError, match="per_head"):
        cfg = {**metric_cfg("concentration"), "per_head": False, "head_pooling": []}  # past the config's check
        get_metric("concentration").compute(sample(), cfg)


def test_stacked_hull_and_components_equal_the_one_map_functions():
    s = synthetic_sample(np.random.default_rng(0), "img", "q", size=64, shape=SHAPE)
    rng = np.random.default_rng(1)
    masks = rng.random((200, 64)) < rng.random((200, 1)) * 0.5
    masks[0], masks[1], masks[2] = False, False, True
    masks[1, [3, 11, 19]] = True  # collinear
    c = s.token_centres.astype(np.float64)
    assert np.allclose(hull_areas(masks, c), [hull_area(c[m]) for m in masks], rtol=1e-9, atol=1e-12)
    for conn in (4, 8):
        assert count_components(masks, s, conn).tolist() == [label_tokens(m, s, conn)[1] for m in masks]


def test_stacked_hotspots_equal_find_hotspots():
    s = sample()
    table = get_metric("hotspots").compute(s, metric_cfg("hotspots", step_pooling=["last"], head_pooling=[],
                                                         exclude_sinks=False, connectivity=8))
    p = s.decode[-1, :, :, 5:69].astype(np.float64)
    with np.errstate(invalid="ignore"):
        p = p / p.sum(-1, keepdims=True)
    for (layer, head), g in table.groupby(["layer", "head"]):
        m = p[layer, int(head)]
        if not np.isfinite(m).all():
            continue
        ref = pd.DataFrame(find_hotspots(m, s, 3, 90, 8))
        assert g["n_tokens"].tolist() == ref["n_tokens"].tolist()
        assert np.allclose(g[["x", "y", "peak", "mass", "area"]].to_numpy(float),
                           ref[["x", "y", "peak", "mass", "area"]].to_numpy(float), rtol=1e-12)
        assert g["quadrant"].tolist() == ref["quadrant"].tolist()


def test_per_head_false_without_a_head_pooling_is_refused_at_config_load():
    from vlmattn.errors import ConfigError
    from vlmattn.workflow import load_config

    cfg = {"questions": {"q": {"text": "Hi?"}}, "models": {"m": {"family": "llava", "path": "x"}},
           "metrics": {"concentration": {"per_head": False, "head_pooling": []}}}
    with pytest.raises(ConfigError, match="metrics.concentration: per_head: false needs a head_pooling"):
        load_config(cfg)
