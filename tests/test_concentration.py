"""Concentration metrics against closed forms and scipy."""

import math

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from tests.synthetic_attention import metric_cfg
from vlmattn.maps import pool_heads, pool_steps, vision_attention
from vlmattn.metrics import concentration as c
from vlmattn.store import AttentionSample


@pytest.mark.parametrize("n", [1, 7, 10, 64, 576])
def test_uniform_closed_form(n):
    p = np.full(n, 1.0 / n)
    assert c.entropy(p) == pytest.approx(math.log(n), abs=1e-12)
    assert c.gini(p) == pytest.approx(0.0, abs=1e-12)
    assert c.effective_span(p, 0.9) == math.ceil(0.9 * n)
    assert c.peak_to_mean(p) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [2, 10, 576])
def test_one_hot_closed_form(n):
    p = np.zeros(n)
    p[n // 3] = 1.0
    assert c.entropy(p) == 0.0
    assert c.gini(p) == pytest.approx((n - 1) / n)
    assert c.effective_span(p, 0.9) == 1
    assert c.peak_to_mean(p) == pytest.approx(n)


def test_entropy_matches_scipy_batched():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(50, 0.3), size=(3, 4))
    p[0, 0, :10] = 0.0
    p /= p.sum(-1, keepdims=True)
    expected = scipy_entropy(p, axis=-1)
    np.testing.assert_allclose(c.entropy(p), expected, rtol=1e-12)


def test_gini_matches_mean_absolute_difference():
    """G = Σᵢ Σⱼ |xᵢ − xⱼ| / (2 n² x̄), an independent definition."""
    rng = np.random.default_rng(1)
    x = rng.random(37)
    mad = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert c.gini(x) == pytest.approx(mad, rel=1e-12)


def test_effective_span_counts_largest_first():
    p = np.array([0.05, 0.5, 0.05, 0.3, 0.1])
    assert c.effective_span(p, 0.9) == 3  # 0.5 + 0.3 + 0.1
    assert c.effective_span(p, 0.5) == 1


def sample_from(decode, n_prompt, vision):
    n_steps = decode.shape[0]
    return AttentionSample(
        input_ids=np.zeros(n_prompt, np.int64), input_tokens=[""] * n_prompt,
        generated_ids=np.zeros(n_steps, np.int64), generated_tokens=[""] * n_steps,
        spans=np.array([vision]), grid=np.array([[1, vision[1] - vision[0]]]),
        token_boxes=np.zeros((vision[1] - vision[0], 4), np.float32), image_size=np.array([1, 1]),
        decode=decode, decode_key_len=np.arange(n_prompt, n_prompt + n_steps),
        prefill=np.zeros((decode.shape[1], decode.shape[2], 1, n_prompt), np.float32),
        prefill_positions=np.array([n_prompt - 1]),
    )


def test_vision_attention_renormalises_and_reports_share():
    decode = np.zeros((1, 1, 2, 6), np.float32)
    decode[0, 0, 0] = [0.2, 0.1, 0.3, 0.0, 0.4, 0.0]  # vision tokens 1..3 hold 0.4
    decode[0, 0, 1] = [0.0, 0.25, 0.25, 0.25, 0.25, 0.0]
    p, share = vision_attention(sample_from(decode, 5, (1, 4)), True, 1e-4)
    np.testing.assert_allclose(share[0, 0], [0.4, 0.75], rtol=1e-6)
    np.testing.assert_allclose(p[0, 0, 0], [0.25, 0.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(p[0, 0, 1], [1 / 3] * 3, rtol=1e-6)


def test_pooling():
    p = np.array([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])  # [L=1, H=2, V=3]
    np.testing.assert_allclose(pool_heads(p, "mean", renormalize=True), [[0.25, 0.25, 0.5]])
    np.testing.assert_allclose(pool_heads(p, "max", renormalize=True), [[0.25, 0.25, 0.5]])
    np.testing.assert_allclose(pool_heads(p, "max", renormalize=False), [[0.5, 0.5, 1.0]])
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(pool_steps(x, "last"), [4, 5])
    np.testing.assert_allclose(pool_steps(x, "mean"), [2, 3])


def test_compute_rows_cover_layers_heads_and_pools():
    rng = np.random.default_rng(2)
    decode = rng.random((3, 2, 4, 12)).astype(np.float32)
    decode /= decode.sum(-1, keepdims=True)
    cfg = metric_cfg("concentration", head_pooling=["mean", "max"], step_pooling=["last", "mean"], exclude_sinks=False)
    df = c.compute(sample_from(decode, 10, (2, 8)), cfg)
    assert len(df) == 2 * 2 * (4 + 2)
    assert set(df["head"]) == {"0", "1", "2", "3", "mean", "max"}
    row = df[(df.step_pool == "last") & (df.layer == 1) & (df["head"] == "2")].iloc[0]
    v = decode[-1, 1, 2, 2:8].astype(np.float64)
    assert row.entropy == pytest.approx(scipy_entropy(v / v.sum()))
    assert row.vision_share == pytest.approx(v.sum())
    assert (df.n_vision == 6).all()
