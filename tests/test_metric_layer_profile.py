"""layer_profile: where the attention row goes, and entropy over heads (vs scipy)."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy as scipy_entropy

from tests.synthetic_attention import make_sample
from vlmattn.metrics.layer_profile import compute

T, L, H, V = 3, 2, 3, 16


def build():
    rng = np.random.default_rng(2)
    vis = rng.dirichlet(np.ones(V), size=(T, L, H))
    masses = rng.dirichlet(np.ones(4), size=(T, L, H))  # vision, before, after, generated
    masses[0, ..., 3] = 0  # row 0 has no generated keys yet
    masses[0] /= masses[0].sum(-1, keepdims=True)
    rest = {"text_before": masses[..., 1], "text_after": masses[..., 2], "generated": masses[..., 3]}
    return make_sample(vis * masses[..., :1], rest=rest), vis, masses


def test_shares_and_entropies_each_step():
    s, vis, masses = build()
    df = compute(s, {"step_pooling": ["each"], "head_pooling": ["mean", "max"], "exclude_sinks": False})
    assert len(df) == T * L * 2
    for t in range(T):
        for layer in range(L):
            r = df[(df["step"] == t) & (df["layer"] == layer) & (df["head"] == "mean")].iloc[0]
            m = masses[t, layer]
            expect = dict(zip(["vision", "text_before", "text_after", "generated"], m.mean(0), strict=True))
            for k, v in expect.items():
                assert r[f"{k}_share"] == pytest.approx(v, abs=1e-12)
            assert r["sink_share"] == 0
            h = scipy_entropy(vis[t, layer], axis=-1)
            assert (r["entropy_mean"], r["entropy_min"], r["entropy_min_head"]) == pytest.approx(
                (h.mean(), h.min(), h.argmin()), abs=1e-12)
            assert r["entropy"] == pytest.approx(scipy_entropy(vis[t, layer].mean(0)), abs=1e-12)
            rmax = df[(df["step"] == t) & (df["layer"] == layer) & (df["head"] == "max")].iloc[0]
            assert rmax["vision_share"] == pytest.approx(m[:, 0].max(), abs=1e-12)
    shares = df[[c for c in df.columns if c.endswith("_share")]]
    np.testing.assert_allclose(shares[df["head"] == "mean"].sum(axis=1), 1.0, atol=1e-12)


def test_mean_steps_and_sink_share():
    p = np.full((2, 1, 2, V), 0.5 / 15)
    p[..., 3] = 0.5  # a sink in every head
    s = make_sample(p * 0.8, rest={"text_after": np.full((2, 1, 2), 0.2)})
    df = compute(s, {"step_pooling": ["mean"], "head_pooling": ["mean"], "exclude_sinks": "both"}).set_index("sinks")
    assert df.loc["included", "vision_share"] == pytest.approx(0.8)
    assert df.loc["excluded", "vision_share"] == pytest.approx(0.4)
    assert df.loc["excluded", "sink_share"] == pytest.approx(0.4)
    assert df.loc["excluded", "text_after_share"] == pytest.approx(0.2)
    assert df.loc["excluded", "entropy_mean"] == pytest.approx(np.log(15))
    assert pd.isna(df.loc["excluded", "step"])


def test_cls_token_has_its_own_share():
    """A CLS token fed to the LLM just before the grid (LLaVA "full") is neither vision nor text."""
    p = np.full((1, 1, 2, V), 0.5 / V)
    s = make_sample(p, rest={"text_before": np.full((1, 1, 2), 0.3), "text_after": np.full((1, 1, 2), 0.2)})
    s.cls_positions = np.array([2])  # the last of the 3 text_before keys, 0.1 each
    df = compute(s, {"step_pooling": ["last"], "head_pooling": ["mean"], "exclude_sinks": False}).iloc[0]
    assert df["cls_share"] == pytest.approx(0.1)
    assert df["text_before_share"] == pytest.approx(0.2)
    assert df["vision_share"] == pytest.approx(0.5) and df["text_after_share"] == pytest.approx(0.2)
    assert df[[c for c in df.index if c.endswith("_share")]].sum() == pytest.approx(1.0)
