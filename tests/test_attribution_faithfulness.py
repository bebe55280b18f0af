"""Deletion/insertion curves and their ranking (:mod:`vlmattn.attribution.faithfulness`).

A planted model decides its answer from one vision token: the map that puts that token first must give
the steepest deletion curve, and the gradient maps computed through captum must find it. The areas are
checked against closed forms, the ranking against planted differences and the random floor, and the
pruning-harness probability against the plain model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from vlmattn.attribution import faithfulness as fa
from vlmattn.attribution import gradients as g

V, D, DECISIVE = 16, 8, 11


def planted():
    """f(x [S, V, D]) = log σ(4 x_j·ŵ − 2): token j = DECISIVE alone decides the answer (p ≈ 0.98 with it,
    0.12 without); removing a token zeroes its embedding."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=gen)
    x = torch.randn(1, V, D, generator=gen) * 0.3
    x[0, DECISIVE] = w / w.norm() * 1.5

    def f(z):
        return torch.nn.functional.logsigmoid(4 * z[:, DECISIVE] @ w / w.norm() - 2)

    def probability(keep):
        z = torch.zeros_like(x)
        z[0, keep] = x[0, keep]
        return float(f(z).exp())

    return f, x, probability


def test_planted_token_gives_the_steepest_deletion():
    f, x, probability = planted()
    ia = g.input_attribution(f, x, torch.zeros_like(x), n_steps=64)
    assert ia.integrated_gradients.sum() == pytest.approx(ia.value - ia.baseline_value, rel=1e-4)
    assert int(np.argmax(ia.integrated_gradients)) == DECISIVE
    onehot = np.zeros(V)
    onehot[DECISIVE] = 1
    last = np.arange(V, dtype=float)
    last[DECISIVE] = -1  # the decisive token ranked last
    maps = {"planted": onehot, "integrated_gradients": ia.integrated_gradients, "saliency": ia.saliency,
            "decisive_last": last, "random": fa.random_map(V, 0, "planted")}
    ks = fa.token_counts(V, [0.0625, 0.25, 0.5, 0.75])
    curves = fa.curves(probability, maps, ks)
    areas = fa.areas(curves.assign(sample="s")).set_index("map")
    deletion = areas["deletion"]
    assert deletion["planted"] == pytest.approx(deletion.min())
    assert deletion["integrated_gradients"] == pytest.approx(deletion.min())
    assert deletion["saliency"] == pytest.approx(deletion.min())
    assert deletion["planted"] < deletion["random"] <= deletion["decisive_last"]  # decisive last: the worst order
    # one token removed: the decisive one drops the answer's probability below a coin flip
    first = curves[(curves["curve"] == "deletion") & (curves["k"] == 1)].set_index("map")["probability"]
    assert first["planted"] < 0.5 < first["decisive_last"]
    # shared ends
    for name in maps:
        c = curves[curves["map"] == name]
        d, i = c[c["curve"] == "deletion"], c[c["curve"] == "insertion"]
        assert d["probability"].iloc[0] == i["probability"].iloc[-1] == pytest.approx(probability(np.arange(V)))
        assert d["probability"].iloc[-1] == i["probability"].iloc[0]


def test_token_counts_order_and_kept_tokens():
    np.testing.assert_array_equal(fa.token_counts(64, [0.0625, 0.5, 0.501]), [0, 4, 32, 64])
    with pytest.raises(ValueError, match="strictly between"):
        fa.token_counts(10, [1.0])
    order = fa.ranking_order(np.array([0.1, 0.5, 0.5, -1.0]))
    np.testing.assert_array_equal(order, [1, 2, 0, 3])
    np.testing.assert_array_equal(fa.kept_tokens(order, 1, "deletion"), [0, 2, 3])
    np.testing.assert_array_equal(fa.kept_tokens(order, 1, "insertion"), [1])
    with pytest.raises(ValueError, match="NaN"):
        fa.ranking_order(np.array([0.1, np.nan]))
    r = fa.random_map(20, 0, "a")
    np.testing.assert_array_equal(np.sort(r), np.arange(1, 21))
    np.testing.assert_array_equal(r, fa.random_map(20, 0, "a"))
    assert not np.array_equal(r, fa.random_map(20, 0, "b"))


def test_areas_closed_form():
    """A linear fall 1 → 0 has area 1/2; a constant c, area c; insertion − deletion their difference."""
    frac = np.linspace(0, 1, 5)
    rows = [("m", "deletion", k, x, 1 - x) for k, x in enumerate(frac)]
    rows += [("m", "insertion", k, x, 0.8) for k, x in enumerate(frac)]
    curves = pd.DataFrame(rows, columns=fa.CURVE_COLUMNS).assign(sample="s")
    a = fa.areas(curves).iloc[0]
    assert a["deletion"] == pytest.approx(0.5)
    assert a["insertion"] == pytest.approx(0.8)
    assert a["insertion_minus_deletion"] == pytest.approx(0.3)


def test_ranking_recovers_planted_differences_and_the_floor():
    rng = np.random.default_rng(1)
    n = 40
    rows = []
    for s in range(n):
        for name, shift in (("good", -0.3), ("fair", -0.1), ("random", 0.0)):
            d = 0.6 + shift + rng.normal(0, 0.05)
            rows.append((s, name, d, 0.9 - shift / 2, 0.9 - shift / 2 - d))
    areas = pd.DataFrame(rows, columns=["sample", "map", "deletion", "insertion", "insertion_minus_deletion"])
    table = fa.ranking(areas, n_resamples=999, confidence=0.95, seed=0)
    dele = table[table["score"] == "deletion"].set_index("map")
    assert list(dele.sort_values("rank").index) == ["good", "fair", "random"]
    assert dele.loc["good", "ci_low"] < dele.loc["good", "mean"] < dele.loc["good", "ci_high"]
    assert dele.loc["good", "ci_low"] < 0.3 < dele.loc["good", "ci_high"]
    assert dele.loc["good", "vs_random_high"] < -0.25 < dele.loc["good", "vs_random_low"] + 0.1
    assert np.isnan(dele.loc["random", "vs_random"])
    ins = table[table["score"] == "insertion"].set_index("map")
    assert ins.loc["good", "rank"] == 1
    again = fa.ranking(areas, n_resamples=999, confidence=0.95, seed=0)
    pd.testing.assert_frame_equal(table, again)


def test_ranking_null_intervals_cover_zero():
    """Two maps with the same distribution: the paired difference's interval covers 0."""
    rng = np.random.default_rng(2)
    rows = [(s, m, *(rng.normal(0.5, 0.1, 1).tolist() * 2), 0.0) for s in range(30) for m in ("a", "random")]
    areas = pd.DataFrame(rows, columns=["sample", "map", "deletion", "insertion", "insertion_minus_deletion"])
    a = fa.ranking(areas, n_resamples=999, confidence=0.95, seed=0).set_index(["score", "map"])
    assert a.loc[("deletion", "a"), "vs_random_low"] < 0 < a.loc[("deletion", "a"), "vs_random_high"]


def test_harness_probability_matches_the_plain_model(loaded):
    from vlmattn.engine.inference import model_inputs

    lm = loaded("llava")
    im = Image.new("RGB", (64, 48), (0, 0, 0))
    ImageDraw.Draw(im).rectangle([4, 4, 28, 28], fill=(200, 30, 30))
    q = "What colour is the shape?"
    inputs = model_inputs(lm, im, q)
    with torch.no_grad():
        p = torch.softmax(lm.model(**inputs).logits[0, -1].double(), -1)
    target = int(p.argmax())
    prob = fa.harness_probability(lm, im, q, target)
    n_vision = int((inputs["input_ids"][0] == lm.model.config.image_token_id).sum())
    assert prob(np.arange(n_vision)) == pytest.approx(float(p[target]), abs=1e-6)
    assert prob(np.zeros(0, np.int64)) != pytest.approx(float(p[target]), abs=1e-6)
