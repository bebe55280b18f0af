"""Paired contrast statistics (vlmattn.contrasts.stats): bootstrap intervals, sign-flip tests, BH,
effect sizes and the contrast table, against scipy, exact enumeration and hand computations."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from vlmattn.contrasts import stats as S
from vlmattn.stats import bh_adjust

RNG_KW = S._RNG_KW  # "rng" (scipy ≥ 1.15) or "random_state"


def _scipy_ci(x, seed, method, confidence=0.95, n_resamples=999):
    res = sps.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method=method,
                        **{RNG_KW: np.random.default_rng(seed)})
    return res.confidence_interval.low, res.confidence_interval.high


def _exact_sign_flip(x):
    """All 2^n sign flips of x [n]: (p_two_sided, p_greater, p_less) of T = mean(x)."""
    t = x.mean()
    tol = 1e-12 * max(1.0, abs(t))
    null = np.array([np.dot(s, x) / len(x) for s in itertools.product((-1.0, 1.0), repeat=len(x))])
    assert len(null) == 2 ** len(x)
    return (np.mean(np.abs(null) >= abs(t) - tol), np.mean(null >= t - tol), np.mean(null <= t + tol))


def _hand_bh(p):
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    flat = p.reshape(-1)
    idx = np.flatnonzero(~np.isnan(flat))
    m = len(idx)
    order = idx[np.argsort(flat[idx], kind="stable")]
    adj = np.empty(m)
    running = 1.0
    for k in range(m, 0, -1):  # k = rank, from the largest p down
        running = min(running, m * flat[order[k - 1]] / k)
        adj[k - 1] = running
    out.reshape(-1)[order] = adj
    return out


# ------------------------------------------------------------------------------------ paired differences
def test_paired_differences_marks_incomplete_pairs():
    a = np.array([[1.0, 2.0], [np.nan, 4.0], [5.0, 6.0]])
    b = np.array([[0.5, 1.0], [1.0, 1.0], [5.0, np.nan]])
    d = S.paired_differences(a, b)
    np.testing.assert_array_equal(d, [[0.5, 1.0], [np.nan, 3.0], [0.0, np.nan]])
    assert d.dtype == np.float64


# ------------------------------------------------------------------------------------- (1) bootstrap
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_matches_scipy_per_cell(method):
    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 1.0, size=(20, 2, 3))
    d[4, 0, 1] = np.nan  # this cell uses its 19 complete pairs, in a scipy call of its own
    d[[2, 7], 1, 2] = np.nan
    low, high = S.bootstrap_ci(d, confidence=0.9, n_resamples=499, seed=11, method=method)
    assert low.shape == high.shape == (2, 3)
    for j, k in itertools.product(range(2), range(3)):
        x = d[:, j, k]
        ref_low, ref_high = _scipy_ci(x[~np.isnan(x)], 11, method, confidence=0.9, n_resamples=499)
        np.testing.assert_allclose([low[j, k], high[j, k]], [ref_low, ref_high], rtol=1e-12, atol=1e-14)
    # a single cell [P] gives 0-d arrays, the same interval
    l0, h0 = S.bootstrap_ci(d[:, 1, 0], confidence=0.9, n_resamples=499, seed=11, method=method)
    assert l0.shape == ()
    np.testing.assert_allclose([l0, h0], [low[1, 0], high[1, 0]], rtol=1e-12)


def test_bootstrap_ci_covers_true_mean():
    rng = np.random.default_rng(5)
    mu, sigma, P, cells = 0.3, 2.0, 100, 200
    d = rng.normal(mu, sigma, size=(P, cells))
    low, high = S.bootstrap_ci(d, confidence=0.95, n_resamples=999, seed=0, method="percentile")
    coverage = np.mean((low < mu) & (mu < high))
    assert 0.88 <= coverage <= 0.995, coverage
    # the width is that of the normal-theory interval, 2 · 1.96 σ / √P, within 15 %
    width = np.median(high - low)
    assert abs(width / (2 * 1.96 * sigma / np.sqrt(P)) - 1) < 0.15, width


def test_bootstrap_ci_degenerate_cells():
    d = np.array([[0.5, 1.0, np.nan], [0.5, 2.0, np.nan], [0.5, np.nan, 3.0]])
    low, high = S.bootstrap_ci(d, confidence=0.95, n_resamples=99, seed=0, method="bca")
    assert low[0] == high[0] == 0.5  # constant cell: a point
    assert np.isnan(low[2]) and np.isnan(high[2])  # one complete pair
    assert low[1] < high[1]


# ----------------------------------------------------------------------------------- (2) sign flip
def test_sign_flip_exact_matches_enumeration():
    rng = np.random.default_rng(8)
    d = rng.normal(0.4, 1.0, size=(8, 6))  # 2^8 = 256 ≤ n_resamples: exact
    d[:, 5] = np.abs(d[:, 5])  # all positive: the most extreme of 256
    for alt, which in (("two-sided", 0), ("greater", 1), ("less", 2)):
        p = S.sign_flip_pvalue(d, n_resamples=999, seed=0, alternative=alt)
        ref = np.array([_exact_sign_flip(d[:, c])[which] for c in range(d.shape[1])])
        np.testing.assert_allclose(p, ref, rtol=0, atol=1e-12)
    p = S.sign_flip_pvalue(d, n_resamples=999, seed=0, alternative="two-sided")
    assert p[5] == 2 / 256
    # exact: the seed does not matter
    np.testing.assert_array_equal(p, S.sign_flip_pvalue(d, n_resamples=999, seed=123))


def test_sign_flip_is_exact_up_to_twenty_pairs_whatever_n_resamples():
    rng = np.random.default_rng(10)
    d = rng.normal(0.4, 1.0, size=(12, 3))  # 2^12 = 4096 > n_resamples = 99: still enumerated
    d[:, 2] = np.abs(d[:, 2])
    p = S.sign_flip_pvalue(d, n_resamples=99, seed=0)
    ref = np.array([_exact_sign_flip(d[:, c])[0] for c in range(3)])
    np.testing.assert_allclose(p, ref, rtol=0, atol=1e-12)
    assert p[2] == 2 / 4096 < 1 / 100  # below the Monte-Carlo floor 1 / (n_resamples + 1)
    assert S.sign_flip_exact(np.array([1, 2, 12, 20, 21]), 99).tolist() == [False, True, True, True, False]
    assert S.sign_flip_exact(21, 2 ** 21).item()


def test_sign_flip_monte_carlo_beyond_twenty_pairs_is_scipys_per_cell():
    rng = np.random.default_rng(9)
    d = rng.normal(0.3, 1.0, size=(22, 3))  # 22 pairs: random sign flips
    d[3, 1] = np.nan  # cell 1 has its own complete pairs (21), drawn with a fresh generator
    p = S.sign_flip_pvalue(d, n_resamples=1999, seed=4)
    for c in range(3):
        x = d[:, c][~np.isnan(d[:, c])]
        alone = S.sign_flip_pvalue(x, n_resamples=1999, seed=4)  # the cell alone: same p
        assert alone == p[c]
        # ... which is scipy's own Monte-Carlo answer for that cell
        ref = sps.permutation_test((x,), np.mean, permutation_type="samples", n_resamples=1999,
                                   **{RNG_KW: np.random.default_rng(4)}).pvalue
        assert p[c] == pytest.approx(ref, abs=1e-15)
        assert p[c] >= 1 / 2000
    a = rng.normal(size=(22, 1, 2))
    table = S.contrast_table(a, np.zeros_like(a), confidence=0.95, n_resamples=99, seed=0, alpha=0.05,
                             method="percentile")
    assert not table["p_exact"].any()
    table = S.contrast_table(a[:14], np.zeros_like(a[:14]), confidence=0.95, n_resamples=99, seed=0, alpha=0.05,
                             method="percentile")
    assert table["p_exact"].all()


def test_bootstrap_interval_of_a_cell_does_not_depend_on_the_others():
    """Tied values (distances on a token grid) make BCa sensitive to the rounding of the resample
    means: a cell's interval must be scipy's for it alone, however many cells share the call."""
    rng = np.random.default_rng(12)
    grid = np.array([1.0, np.sqrt(2), 2.0, np.sqrt(5), np.sqrt(8), 3.0])
    d = rng.choice(grid, size=(16, 40))
    for method in ("bca", "percentile"):
        low, high = S.bootstrap_ci(d, confidence=0.95, n_resamples=999, seed=0, method=method)
        for c in (0, 17, 39):
            ref = _scipy_ci(d[:, c], 0, method)
            assert (low[c], high[c]) == ref  # exactly
            alone = S.bootstrap_ci(d[:, c], confidence=0.95, n_resamples=999, seed=0, method=method)
            assert (float(alone[0]), float(alone[1])) == ref
        # adding cells changes nothing
        more = np.concatenate([d, rng.choice(grid, size=(16, 25))], axis=1)
        low2, high2 = S.bootstrap_ci(more, confidence=0.95, n_resamples=999, seed=0, method=method)
        np.testing.assert_array_equal(low2[:40], low)
        np.testing.assert_array_equal(high2[:40], high)


# ----------------------------------------------------------------------------------------- (3) BH
def test_bh_hand_computed():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2, np.nan])
    # m = 5; sorted 0.005 0.01 0.03 0.04 0.2 → m p/k = .025 .025 .05 .05 .2 → running min from the top
    expected = np.array([0.025, 0.05, 0.05, 0.025, 0.2, np.nan])
    np.testing.assert_allclose(bh_adjust(p), expected, rtol=1e-12)
    rng = np.random.default_rng(1)
    q = rng.uniform(size=(3, 4)) ** 3
    q[0, 2] = q[2, 1] = np.nan
    out = bh_adjust(q)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, _hand_bh(q), rtol=1e-12)
    assert np.all(np.isnan(bh_adjust([np.nan, np.nan])))


# -------------------------------------------------------------------------------------- effect size
def test_effect_size():
    rng = np.random.default_rng(4)
    d = rng.normal(0.5, 2.0, size=(10, 4))
    d[0, 1] = np.nan
    d[:, 2] = 0.7  # std 0
    d[1:, 3] = np.nan  # one pair
    dz = S.effect_size(d)
    for c in (0, 1):
        x = d[:, c][~np.isnan(d[:, c])]
        assert dz[c] == pytest.approx(x.mean() / x.std(ddof=1), rel=1e-12)
    assert np.isnan(dz[2]) and np.isnan(dz[3])


# ----------------------------------------------------------------------------------- contrast table
def _planted(seed=0, P=24, L=3, H=4, shift=1.5, cell=(1, 2)):
    rng = np.random.default_rng(seed)
    scene = rng.normal(0.0, 1.0, size=(P, L, H))  # shared by both conditions of a pair
    a = scene + rng.normal(0.0, 0.5, size=(P, L, H))
    b = scene + rng.normal(0.0, 0.5, size=(P, L, H))
    a[(slice(None), *cell)] += shift * 0.5  # d = a − b has sd 0.5·√2 ≈ 0.71: d_z ≈ 1.06
    return a, b


def _table(a, b, seed=7, **kw):
    args = dict(confidence=0.95, n_resamples=4999, seed=seed, alpha=0.05, method="bca")
    args.update(kw)
    return S.contrast_table(a, b, **args)


def test_planted_effect_ranks_first_and_is_the_only_discovery():
    a, b = _planted()
    df = _table(a, b)
    assert list(df.columns) == S.COLUMNS and len(df) == 12
    assert list(zip(df.layer, df["head"], strict=True))[:3] == [(0, 0), (0, 1), (0, 2)]  # layer-major
    top = df.loc[df["rank"] == 1].iloc[0]
    assert (top["layer"], top["head"]) == (1, 2)
    assert top.p_adj < 0.01 and top.ci_low > 0 and top.effect_size > 1
    assert df.loc[df.significant, ["layer", "head"]].values.tolist() == [[1, 2]]
    # bookkeeping: means, differences, ranks
    np.testing.assert_allclose(df.mean_a - df.mean_b, df["diff"], atol=1e-12)
    np.testing.assert_allclose(df["diff"], (a - b).mean(axis=0).reshape(-1), atol=1e-12)
    assert sorted(df["rank"]) == list(range(1, 13))
    assert df.sort_values("rank")["diff"].is_monotonic_decreasing
    assert (df.ci_low <= df["diff"]).all() and (df["diff"] <= df.ci_high).all()


@pytest.mark.parametrize("n_pairs", [12, 22])  # exact, Monte Carlo
def test_null_calibration(n_pairs):
    """No effect: the fraction of p < 0.05 over 400 datasets is not above nominal."""
    d = np.random.default_rng(2024).normal(size=(n_pairs, 400))
    hits = int((S.sign_flip_pvalue(d, n_resamples=199, seed=0) < 0.05).sum())
    assert sps.binomtest(hits, 400, 0.05, alternative="greater").pvalue > 0.001, hits


def test_table_is_deterministic():
    a, b = _planted(seed=3)
    a[2, 0, 1] = np.nan
    csv = [_table(a, b, n_resamples=999).to_csv(index=False, float_format="%.8g") for _ in range(2)]
    assert csv[0] == csv[1]
    other = _table(a, b, seed=8, n_resamples=999).to_csv(index=False, float_format="%.8g")
    assert other != csv[0]  # the seed is used


def test_table_drops_incomplete_pairs_per_cell():
    a, b = _planted(seed=5, P=10, L=2, H=2, cell=(0, 1))
    a[0, 0, 0] = np.nan  # pair 0 incomplete in cell (0, 0) only
    b[:, 1, 1] = np.nan
    b[4, 1, 1] = 1.0
    a[4, 1, 1] = 2.0  # cell (1, 1): one complete pair
    df = _table(a, b, n_resamples=999)
    cell = df.iloc[0]
    assert cell.n_pairs == 9
    assert cell.mean_b == pytest.approx(b[1:, 0, 0].mean())  # B averaged over the complete pairs only
    low, high = S.bootstrap_ci(a[1:, 0, 0] - b[1:, 0, 0], confidence=0.95, n_resamples=999, seed=7, method="bca")
    np.testing.assert_allclose([cell.ci_low, cell.ci_high], [low, high], rtol=1e-12)
    one = df.iloc[3]
    assert one.n_pairs == 1 and one["diff"] == 1.0
    assert np.isnan([one.ci_low, one.ci_high, one.p, one.p_adj, one.effect_size]).all()
    assert not one.significant
    assert df.p_adj.notna().sum() == 3  # BH over the three tested cells
    b[4, 1, 1] = np.nan  # no complete pair: no mean, no rank
    df = _table(a, b, n_resamples=999, layers=["l0", "l1"], heads=[10, 11])
    assert np.isnan(df.iloc[3]["diff"]) and df.iloc[3]["rank"] is pd.NA
    assert sorted(df["rank"].dropna()) == [1, 2, 3]
    assert df.layer.tolist() == ["l0", "l0", "l1", "l1"] and df["head"].tolist() == [10, 11, 10, 11]


# ------------------------------------------------------------------------------------- (7) errors
@pytest.mark.parametrize("call, name", [
    (lambda: S.paired_differences(np.zeros((4, 2)), np.zeros((4, 3))), "b must have the shape of a"),
    (lambda: S.paired_differences(np.zeros((4, 2)), np.full((4, 2), np.inf)), "b contains infinite"),
    (lambda: S.paired_differences(1.0, 2.0), "a must have a leading pair axis"),
    (lambda: S.paired_differences(np.zeros((0, 2)), np.zeros((0, 2))), "a has no pairs"),
    (lambda: S.paired_differences([["x"]], [[1.0]]), "a must be a numeric array"),
    (lambda: S.contrast_table(np.zeros((4, 2)), np.zeros((4, 2)), confidence=0.9, n_resamples=9, seed=0,
                              alpha=0.05, method="bca"), r"a must have shape \[P, L, H\]"),
    (lambda: S.bootstrap_ci(np.zeros(4), confidence=95, n_resamples=9, seed=0, method="bca"), "confidence"),
    (lambda: S.bootstrap_ci(np.zeros(4), confidence=0.9, n_resamples=0, seed=0, method="bca"), "n_resamples"),
    (lambda: S.bootstrap_ci(np.zeros(4), confidence=0.9, n_resamples=9, seed=1.5, method="bca"), "seed"),
    (lambda: S.bootstrap_ci(np.zeros(4), confidence=0.9, n_resamples=9, seed=-1, method="bca"), "seed"),
    (lambda: S.bootstrap_ci(np.zeros(4), confidence=0.9, n_resamples=9, seed=0, method="t"), "method"),
    (lambda: S.sign_flip_pvalue(np.zeros(4), n_resamples=9, seed=0, alternative="both"), "alternative"),
    (lambda: S.sign_flip_pvalue(np.zeros(4), n_resamples=True, seed=0), "n_resamples"),
    (lambda: S.effect_size(np.array([1.0, np.inf])), "d contains infinite"),
    (lambda: bh_adjust([0.5, 1.5]), "p must lie in"),
    (lambda: S.contrast_table(np.zeros((4, 2, 2)), np.zeros((4, 2, 2)), confidence=0.9, n_resamples=9, seed=0,
                              alpha=0, method="bca"), "alpha"),
    (lambda: S.contrast_table(np.zeros((4, 2, 2)), np.zeros((4, 2, 2)), confidence=0.9, n_resamples=9, seed=0,
                              alpha=0.05, method="bca", layers=[0]), "layers must have L = 2"),
])
def test_bad_arguments_raise_one_line_value_error(call, name):
    with pytest.raises(ValueError, match=name) as exc:
        call()
    assert "\n" not in str(exc.value)


def test_chunking_changes_no_result(monkeypatch):
    a, b = _planted(seed=6, P=12, L=2, H=3)
    a[1, 1, 1] = np.nan
    whole = _table(a, b, n_resamples=499)
    monkeypatch.setattr(S, "_MAX_ELEMENTS", 1)  # one resample per batch
    monkeypatch.setattr(S, "_MAX_NULL", 1)  # one cell per scipy call
    pd.testing.assert_frame_equal(_table(a, b, n_resamples=499), whole, rtol=1e-12)
