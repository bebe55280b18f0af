"""information: MI of the steps × vision-tokens joint; closed forms and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from tests.synthetic_attention import make_sample, metric_cfg, one_hot
from vlmattn.metrics.information import compute, mutual_information

CFG = {"head_pooling": [], "exclude_sinks": False, "regions": {}}


def config(**changes) -> dict:
    """The information block of CFG with ``changes``, schema defaults filled in."""
    return metric_cfg("information", **{**CFG, **changes})


def image_row(df, head="0"):
    return df[(df["region"] == "image") & (df["head"] == head)].iloc[0]


def test_independent_joint_gives_zero():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(16))
    scale = rng.uniform(0.2, 1, size=5)
    p = (scale[:, None] * q)[:, None, None, :]  # every step: the same profile, any vision share
    for renormalize in (True, False):
        r = image_row(compute(make_sample(p), config(renormalize=renormalize)))
        assert r["mi"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("steps", [2, 4, 6])
def test_one_to_one_gives_log_t(steps):
    p = np.stack([one_hot(3 * t, 16) for t in range(steps)])[:, None, None, :]
    r = image_row(compute(make_sample(p), config()))
    assert r["mi"] == pytest.approx(np.log(steps), abs=1e-12)
    assert r["mi_norm"] == pytest.approx(1.0, abs=1e-12)
    assert (r["h_steps"], r["h_tokens"]) == pytest.approx((np.log(steps), np.log(steps)), abs=1e-12)


def test_matches_sklearn_on_integer_contingency():
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 20, size=(7, 16))
    expected = mutual_info_score(None, None, contingency=counts)
    r = image_row(compute(make_sample((counts / 1000.0)[:, None, None, :]), config(renormalize=False)))
    assert r["mi"] == pytest.approx(expected, abs=1e-12)
    assert mutual_information(counts.astype(float)) == pytest.approx(expected, abs=1e-12)


def test_within_region():
    # steps 0, 1 look at two top-left tokens; steps 2, 3 at two bottom-right tokens
    p = np.stack([one_hot(v, 16) for v in (0, 5, 10, 15)])[:, None, None, :]
    df = compute(make_sample(p), config()).set_index("region")
    assert df.loc["image", "mi"] == pytest.approx(np.log(4))
    assert df.loc["top_left", "mi"] == pytest.approx(np.log(2))
    assert df.loc["top_left", "mass"] == pytest.approx(0.5)
    assert np.isnan(df.loc["top_right", "mi"]) and df.loc["top_right", "mass"] == 0
