"""The answer's step (``first``: the row that produces the first answer token) is in the default step
pooling of every metric that pools steps, and in the default run's config."""

import numpy as np
import pytest
import yaml

from tests import REPO
from tests.synthetic_attention import make_sample, metric_cfg
from vlmattn.metrics import get_metric
from vlmattn.workflow import load_config

STEP_METRICS = ["concentration", "spatial", "grounding", "hotspots", "geometry", "head_clusters"]


@pytest.mark.parametrize("name", STEP_METRICS)
def test_schema_default_step_pooling_has_the_answer_step(name):
    assert metric_cfg(name)["step_pooling"][0] == "first"
    p = np.random.default_rng(0).dirichlet(np.ones(16), size=(3, 2, 2))
    df = get_metric(name).compute(make_sample(p, boxes=[[0, 0, 32, 32]], labels=["cat"]), metric_cfg(name))
    first = df[df["step_pool"] == "first"]
    assert len(first) > 0 and (first["step"] == 0).all()


@pytest.mark.parametrize("name", STEP_METRICS)
def test_default_run_has_the_answer_step(name):
    cfg = load_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert cfg["metrics"][name]["step_pooling"][0] == "first"
