"""The shared statistics helpers against enumeration, scipy and planted effects and nulls."""

from __future__ import annotations

import numpy as np
import pytest


def test_paired_sign_flip_exact_by_enumeration():
    # every one of the 2^n sign patterns of the differences, counted by hand
    import itertools

    from vlmattn.stats import paired_sign_flip

    a = np.array([1.0, 0.6, 1.0, 0.3, 0.9, 1.0])
    b = np.array([0.6, 0.6, 0.0, 0.3, 0.3, 0.6])
    d = a - b
    flips = np.array(list(itertools.product([1, -1], repeat=len(d))))
    means = (flips * d).mean(axis=1)
    expected = np.mean(np.abs(means) >= abs(d.mean()) - 1e-12)
    assert paired_sign_flip(a, b) == pytest.approx(expected)
    assert paired_sign_flip(a, a) == 1.0


def test_paired_sign_flip_null_and_effect():
    from vlmattn.stats import paired_sign_flip

    rng = np.random.default_rng(0)
    # a planted effect is found; under the null the p-values are roughly uniform
    base = rng.random(200)
    assert paired_sign_flip(np.clip(base + 0.1, 0, 1), base, n_resamples=999) < 0.01
    ps = [paired_sign_flip(rng.random(30), rng.random(30), n_resamples=199, seed=s) for s in range(60)]
    assert 0.02 < np.mean(np.array(ps) < 0.1) < 0.25


def test_mean_interval_matches_scipy():
    from scipy import stats as st

    from vlmattn.stats import mean_interval

    v = np.array([0.0, 0.3, 0.6, 1.0, 1.0, 0.9, 0.6])
    low, high = mean_interval(v)
    ref = st.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=st.sem(v))
    assert (low, high) == pytest.approx((max(ref[0], 0), min(ref[1], 1)))
    assert np.isnan(mean_interval([0.5])[0])
