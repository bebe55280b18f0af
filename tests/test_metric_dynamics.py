"""dynamics: per generated token entropy (vs scipy), peak, vision share and region masses."""

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from tests.synthetic_attention import make_sample, metric_cfg, one_hot
from vlmattn.metrics.dynamics import compute

CFG = {"head_pooling": ["mean", "max"], "exclude_sinks": False, "regions": {"top_band": [0, 0, 1, 0.25]}}


def config(**changes) -> dict:
    """The dynamics block of CFG with ``changes``, schema defaults filled in."""
    return metric_cfg("dynamics", **{**CFG, **changes})


def test_per_token_rows_match_scipy_and_closed_forms():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(16), size=(3, 2, 2))
    p[1, :, :] = one_hot(0, 16)  # step 1: everything on the top-left token
    share = np.array([0.9, 0.5, 0.7])[:, None, None, None]
    s = make_sample(p * share, tokens=["Yes", "NA", " left"], boxes=[[0, 0, 32, 32]], labels=["tri"])
    df = compute(s, config())
    assert len(df) == 3 * 2 * 4  # steps × layers × (2 heads + 2 pooled)
    assert df.drop_duplicates("step")["token"].tolist() == ["Yes", "NA", " left"]
    for t in range(3):
        for layer in range(2):
            for head in range(2):
                r = df[(df["step"] == t) & (df["layer"] == layer) & (df["head"] == str(head))].iloc[0]
                q = p[t, layer, head]
                assert r["entropy"] == pytest.approx(scipy_entropy(q), abs=1e-12)
                assert r["norm_entropy"] == pytest.approx(scipy_entropy(q) / np.log(16), abs=1e-12)
                assert r["peak"] == pytest.approx(q.max(), abs=1e-12)
                assert r["vision_share"] == pytest.approx(share[t, 0, 0, 0], abs=1e-12)
                assert r["mass_top_left"] == pytest.approx(q[[0, 1, 4, 5]].sum(), abs=1e-12)
                assert r["mass_top_band"] == pytest.approx(q[:4].sum(), abs=1e-12)
                assert r["mass_objects"] == pytest.approx(q[[0, 1, 4, 5]].sum(), abs=1e-12)
    one = df[(df["step"] == 1) & (df["head"] == "mean")]
    assert np.all(one["entropy"] == 0) and np.all(one["mass_top_left"] == 1) and np.all(one["peak"] == 1)


def test_without_boxes_object_mass_is_nan_and_sinks_double_rows():
    p = np.full((2, 1, 2, 16), 1 / 16)
    df = compute(make_sample(p), config(exclude_sinks="both"))
    assert df["mass_objects"].isna().all()
    assert df.groupby("sinks").size().to_dict() == {"excluded": 8, "included": 8}
