"""Cross-modal alignment and the modality gap (:mod:`vlmattn.attribution.alignment`, :mod:`.modality_gap`)
against scikit-learn and scipy called directly, and against planted geometry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.model_selection import StratifiedKFold, cross_val_score

from vlmattn.attribution import alignment as al
from vlmattn.attribution import modality_gap as mg


def test_cosine_map_matches_sklearn():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 12, 5))
    vision = np.array([1, 2, 3, 4, 7])
    got = al.cosine_map(hidden, vision, 10)
    for layer in range(3):
        ref = cosine_similarity(hidden[layer, vision], hidden[layer, [10]])[:, 0]
        np.testing.assert_allclose(got[layer], ref, atol=1e-12)
    text = np.array([0, 9, 11])
    got = al.cosine_map(hidden, vision, text)
    np.testing.assert_allclose(got[1], cosine_similarity(hidden[1, vision], hidden[1, text]).mean(1), atol=1e-12)


def test_spearman_and_box_agreement():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 20)), rng.normal(size=(4, 20))
    b[2] = a[2] ** 3  # monotone: rho = 1
    got = al.spearman(a, b)
    for k in range(4):
        assert got[k] == pytest.approx(spearmanr(a[k], b[k]).statistic)
    assert got[2] == pytest.approx(1.0)
    assert np.isnan(al.spearman(np.ones((1, 5)), a[:1, :5])[0])
    mask = np.zeros(20, bool)
    mask[[3, 4]] = True
    m = np.full(20, -1.0)
    m[3], m[4], m[10] = 3.0, 1.0, 2.0  # negatives do not count; positive mass 6, of which 4 on the box
    point, energy = al.box_agreement(m[None], mask)
    assert int(point[0]) == 1
    assert energy[0] == pytest.approx(4 / 6)


def test_modality_gap_matches_sklearn_and_closed_forms():
    rng = np.random.default_rng(2)
    d = 6
    shift = np.zeros(d)
    shift[0] = 3.0
    vision, text = rng.normal(size=(60, d)) + shift, rng.normal(size=(50, d)) - shift
    acc, sd = mg.separability(vision, text, folds=5, seed=0)
    x = np.concatenate([vision, text])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = np.r_[np.ones(60), np.zeros(50)]
    ref = cross_val_score(LogisticRegression(max_iter=1000), x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert (acc, sd) == (pytest.approx(ref.mean(), abs=0), pytest.approx(ref.std(), abs=0))
    assert acc > 0.95
    same = mg.separability(rng.normal(size=(200, d)), rng.normal(size=(200, d)), folds=5, seed=0)[0]
    assert 0.35 < same < 0.65
    # centroid distance from per-sample sums equals the direct one over all tokens
    hidden = rng.normal(size=(2, 30, d))
    v1, v2, t1 = np.arange(0, 10), np.arange(10, 18), np.arange(18, 30)
    sums_v = mg.normalised_sums(hidden, v1) + mg.normalised_sums(hidden, v2)
    got = mg.centroid_distance(sums_v, 18, mg.normalised_sums(hidden, t1), 12)
    u = hidden / np.linalg.norm(hidden, axis=-1, keepdims=True)
    direct = np.linalg.norm(u[:, :18].mean(1) - u[:, 18:].mean(1), axis=-1)
    np.testing.assert_allclose(got, direct, atol=1e-12)
    # antipodal unit clouds: distance 2; identical: 0
    e = np.eye(d)[:1]
    assert mg.centroid_distance(e * 3, 3, -e * 2, 2)[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 5 tokens"):
        mg.separability(vision[:3], text, folds=5, seed=0)
