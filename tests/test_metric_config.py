"""Metric options: the schema is the one source of defaults, and a metric left out of the config is off."""

import numpy as np
import pytest
import yaml

from tests import REPO
from tests.synthetic_attention import MINIMAL, make_sample, metric_cfg
from vlmattn.metrics import METRICS, get_metric
from vlmattn.metrics.options import metric_params
from vlmattn.workflow import load_config


def sample():
    p = np.random.default_rng(0).dirichlet(np.ones(16), size=(2, 2, 3))
    return make_sample(p, boxes=[[0, 0, 32, 32]], labels=["cat"])


def test_a_metric_left_out_of_the_config_is_off():
    cfg = load_config({**MINIMAL, "metrics": {"spatial": {"objects": False}}})
    assert list(cfg["metrics"]) == ["spatial"]
    # a listed block gets the schema's defaults
    assert cfg["metrics"]["spatial"]["exclude_sinks"] == "both"
    assert cfg["metrics"]["spatial"]["head_pooling"] == ["mean", "max"]
    assert load_config(MINIMAL)["metrics"] == {}


@pytest.mark.parametrize("name", METRICS)
def test_metric_code_has_no_defaults_of_its_own(name):
    """Every option is read from the block the schema filled in: an empty block is an error, not a
    second set of defaults."""
    with pytest.raises(KeyError):
        get_metric(name).compute(sample(), {})
    assert len(get_metric(name).compute(sample(), metric_cfg(name))) > 0


def test_schema_defaults_reach_the_table():
    df = get_metric("concentration").compute(sample(), metric_cfg("concentration"))
    assert set(df["sinks"]) == {"included", "excluded"}
    assert {"mean", "max"} <= set(df["head"])


def test_sink_rule_comes_from_the_schema_when_the_sinks_metric_is_off():
    metrics = load_config({**MINIMAL, "metrics": {"grounding": {}}})["metrics"]
    assert "sinks" not in metrics
    sinks = load_config({**MINIMAL, "metrics": {"sinks": {}}})["metrics"]["sinks"]
    assert metric_params("grounding", metrics)["sink_rule"] == sinks
    changed = load_config({**MINIMAL, "metrics": {"grounding": {}, "sinks": {"ratio": 7}}})["metrics"]
    assert metric_params("grounding", changed)["sink_rule"]["ratio"] == 7
    off = {"grounding": {**metrics["grounding"], "exclude_sinks": False}}
    assert "sink_rule" not in metric_params("grounding", off)


def test_the_default_run_lists_every_metric():
    """config.yaml names every metric: that a metric left out is off changes nothing in the default run."""
    assert list(load_config(yaml.safe_load((REPO / "config.yaml").read_text()))["metrics"]) == list(METRICS)
