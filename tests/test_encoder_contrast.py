"""Vision-encoder layer contrasts and the statistics of per-pair divergences, on hand-made samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy
from scipy import stats as sps
from scipy.spatial.distance import directed_hausdorff, jensenshannon
from scipy.stats import entropy

from tests.synthetic_attention import encoder_attention, make_sample, tile
from vlmattn.contrasts import divergence, encoder, pairs, summary
from vlmattn.maps import box_mask

STATS = dict(confidence=0.95, n_resamples=9999, seed=0, alpha=0.05, method="bca")
RNG_KW = "rng" if tuple(int(x) for x in scipy.__version__.split(".")[:2]) >= (1, 15) else "random_state"
N_SIDE = 8  # 8 × 8 patches on a 64 × 64 image
TOP_LEFT = [r * N_SIDE + c for r in range(N_SIDE // 2) for c in range(N_SIDE // 2)]


def enc_sample(received, cls=None, patch_grid=None):
    """A sample with the given encoder summaries (its LLM part: a uniform 2 × 2 token map)."""
    return make_sample(tile(np.full(4, 0.25)), vision_encoder=encoder_attention(received, cls, patch_grid))


def ref_maps(x, pool):
    """Independent reference of the encoder maps: per-head normalisation, pooling over defined heads,
    renormalisation, then the layer mean appended."""
    x = np.asarray(x, np.float64)
    out = []
    for layer in x:
        rows = [h / h.sum() for h in layer if h.sum() > 0]
        if not rows:
            out.append(np.full(x.shape[-1], np.nan))
            continue
        m = np.mean(rows, 0) if pool == "mean" else np.max(rows, 0)
        out.append(m / m.sum())
    out = np.array(out)
    defined = out[~np.isnan(out).any(1)]
    mean = defined.mean(0)
    return np.vstack([out, mean / mean.sum()])


def planted_pairs(n_pairs, n_layers, n_heads, rng, layer=None):
    """Pairs of encoder samples with Dirichlet received rows; in A, ``layer`` (if any) puts half its
    mass evenly on the top-left patches."""
    n = N_SIDE * N_SIDE
    tl = np.zeros(n)
    tl[TOP_LEFT] = 1 / len(TOP_LEFT)
    a, b = [], []
    for _ in range(n_pairs):
        ra = rng.dirichlet(np.ones(n), size=(n_layers, n_heads))
        rb = rng.dirichlet(np.ones(n), size=(n_layers, n_heads))
        if layer is not None:
            ra[layer] = 0.5 * ra[layer] + 0.5 * tl
        a.append(enc_sample(ra))
        b.append(enc_sample(rb))
    return a, b


# ------------------------------------------------------------------------------------------- maps
@pytest.mark.parametrize("pool", ["mean", "max"])
def test_encoder_maps_match_reference(pool):
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 16)) * 0.01
    x[1, 0] = 0.0  # an undefined head: left out of the pool
    x[2] = 0.0  # an undefined layer: NaN
    cls = rng.random((3, 2, 16))
    s = enc_sample(x, cls)
    m = encoder.encoder_maps(s, source="received", head_pooling=pool)
    assert m.shape == (3, 16)
    ref = ref_maps(x, pool)
    np.testing.assert_allclose(m[:2], ref[:2], rtol=1e-12)
    np.testing.assert_allclose(m[:2].sum(-1), 1.0)
    assert np.isnan(m[2]).all()
    np.testing.assert_allclose(encoder.encoder_layer_maps(s, source="received", head_pooling=pool)[-1], ref[-1],
                               rtol=1e-12)
    np.testing.assert_allclose(encoder.encoder_maps(s, source="cls", head_pooling=pool), ref_maps(cls, pool)[:3],
                               rtol=1e-12)


def test_missing_cls_and_missing_encoder_raise():
    s = enc_sample(np.full((2, 1, 16), 1 / 16))
    with pytest.raises(ValueError, match="CLS"):
        encoder.encoder_maps(s, source="cls", head_pooling="mean")
    with pytest.raises(ValueError, match="source"):
        encoder.encoder_maps(s, source="rollout", head_pooling="mean")
    bare = make_sample(tile(np.full(4, 0.25)))
    for call in (lambda: encoder.encoder_maps(bare, source="received", head_pooling="mean"),
                 lambda: encoder.patch_roi_mask(bare, "top_left"),
                 lambda: encoder.encoder_contrast([s], [bare], "top_left", source="received", head_pooling="mean",
                                                  **STATS),
                 lambda: encoder.encoder_divergence([bare], [s], source="received", head_pooling="mean",
                                                    epsilon=1e-6, top_fraction=0.1)):
        with pytest.raises(ValueError, match="no vision-encoder attention"):
            call()


def test_pairs_must_share_patch_grid():
    s16, s64 = enc_sample(np.full((2, 1, 16), 1 / 16)), enc_sample(np.full((2, 1, 64), 1 / 64))
    with pytest.raises(ValueError, match="patch grid"):
        encoder.encoder_divergence([s16], [s64], source="received", head_pooling="mean", epsilon=1e-6,
                                   top_fraction=0.1)
    with pytest.raises(ValueError, match="same number"):
        encoder.roi_masses([s16, s16], [s16], "top_left", source="received", head_pooling="mean")


def test_patch_roi_mask_half_open_and_fallback():
    s = enc_sample(np.full((1, 1, 64), 1 / 64))  # 8 × 8 patches of 8 px: centres at (k + 0.5) / 8
    centre = (np.arange(8) + 0.5) / 8
    cy, cx = np.meshgrid(centre, centre, indexing="ij")
    cx, cy = cx.ravel(), cy.ravel()
    np.testing.assert_array_equal(encoder.patch_roi_mask(s, "top_left"), (cx < 0.5) & (cy < 0.5))
    box = [0.25, 0.3125, 0.5, 1.0]  # y0 on a row of centres: included; x1 = 0.5 excludes nothing at 0.5
    np.testing.assert_array_equal(encoder.patch_roi_mask(s, box),
                                  (cx >= 0.25) & (cx < 0.5) & (cy >= 0.3125) & (cy < 1.0))
    tiny = [0.26, 0.01, 0.27, 0.02]  # no centre inside: the patch containing (0.265, 0.015), row 0 col 2
    assert np.flatnonzero(encoder.patch_roi_mask(s, tiny)).tolist() == [2]
    # the LLM tokens' rule on the same grid gives the same mask
    llm = make_sample(tile(np.full(64, 1 / 64)))
    for roi in ("top_left", "bottom_right", box, tiny):
        np.testing.assert_array_equal(encoder.patch_roi_mask(s, roi), box_mask(llm, pairs.roi_box(roi)))


# -------------------------------------------------------------------------------------- contrast
def test_planted_layer_ranks_first_with_small_adjusted_p():
    k = 2
    a, b = planted_pairs(12, 4, 3, np.random.default_rng(5), layer=k)
    t = encoder.encoder_contrast(a, b, "top_left", source="received", head_pooling="mean", **STATS)
    assert list(t.columns) == encoder.COLUMNS and list(t["layer"]) == [0, 1, 2, 3]
    top = t.loc[t["rank"] == 1].iloc[0]
    assert top["layer"] == k and top["n_pairs"] == 12
    assert top["p_adj"] < 1e-2 and top["significant"]
    assert t.loc[t["layer"] != k, "significant"].sum() == 0
    # mean ROI mass in A from the reference maps
    mass = [ref_maps(s.vision_encoder.received, "mean")[k, TOP_LEFT].sum() for s in a]
    assert top["mean_a"] == pytest.approx(np.mean(mass), rel=1e-12)
    assert 0.5 < top["mean_a"] < 0.75 and 0.1 < top["mean_b"] < 0.4


def test_null_is_significant_no_more_often_than_nominal():
    alpha, reps, n_layers = 0.1, 200, 3
    any_hit, cell_hits = 0, 0
    for rep in range(reps):
        a, b = planted_pairs(8, n_layers, 2, np.random.default_rng(1000 + rep))
        t = encoder.encoder_contrast(a, b, "top_left", source="received", head_pooling="mean", confidence=0.9,
                                     n_resamples=99, seed=rep, alpha=alpha, method="percentile")
        any_hit += bool(t["significant"].any())
        cell_hits += int((t["p"] < alpha).sum())
    # BH under the complete null: P(any discovery) ≤ α; each p is valid: P(p < α) ≤ α
    assert any_hit / reps <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps)
    n_cells = reps * n_layers
    assert cell_hits / n_cells <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / n_cells)


# ------------------------------------------------------------------------------------ divergences
def grid_points(idx, cols):
    return np.stack(np.divmod(np.asarray(idx), cols), axis=1).astype(float)


def test_encoder_divergence_matches_scipy():
    rng = np.random.default_rng(7)
    eps, frac, n = 1e-4, 0.25, 16
    k = int(np.ceil(frac * n))
    a = [enc_sample(rng.dirichlet(np.ones(n), size=(2, 3))) for _ in range(3)]
    b = [enc_sample(rng.dirichlet(np.ones(n), size=(2, 3))) for _ in range(3)]
    t = encoder.encoder_divergence(a, b, source="received", head_pooling="max", epsilon=eps, top_fraction=frac)
    assert list(t.columns) == divergence.COLUMNS
    assert list(t["layer"]) == ["0", "1", "all"] * 3 and list(t["pair"]) == [0] * 3 + [1] * 3 + [2] * 3
    for i, (sa, sb) in enumerate(zip(a, b, strict=True)):
        ma, mb = ref_maps(sa.vision_encoder.received, "max"), ref_maps(sb.vision_encoder.received, "max")
        rows = t[t["pair"] == i].reset_index(drop=True)
        for j in range(3):
            pa, pb = (ma[j] + eps) / (1 + n * eps), (mb[j] + eps) / (1 + n * eps)
            assert rows.loc[j, "kl_ab"] == pytest.approx(entropy(pa, pb), rel=1e-10)
            assert rows.loc[j, "kl_ba"] == pytest.approx(entropy(pb, pa), rel=1e-10)
            assert rows.loc[j, "js"] == pytest.approx(jensenshannon(pa, pb) ** 2, rel=1e-8)
            sa_pts = grid_points(np.argsort(-ma[j])[:k], 4)
            sb_pts = grid_points(np.argsort(-mb[j])[:k], 4)
            ab, ba = directed_hausdorff(sa_pts, sb_pts)[0], directed_hausdorff(sb_pts, sa_pts)[0]
            assert rows.loc[j, ["hausdorff_ab", "hausdorff_ba", "hausdorff"]].tolist() == pytest.approx(
                [ab, ba, max(ab, ba)])


# bca is left out here: with 8 pairs some resamples are permutations of the pairs, whose mean equals the
# sample mean up to rounding, and bca's bias correction counts them by a comparison that the rounding
# decides (it differs between scipy's one-cell call and the vectorised one)
@pytest.mark.parametrize("method", ["percentile", "basic"])
def test_within_condition_and_summary_against_scipy(method):
    rng = np.random.default_rng(11)
    n_pairs, eps, frac = 8, 1e-4, 0.1
    a, b = planted_pairs(n_pairs, 2, 2, rng, layer=1)
    opts = dict(source="received", head_pooling="mean", epsilon=eps, top_fraction=frac)
    t = encoder.encoder_divergence(a, b, **opts)
    null = encoder.encoder_within_condition(b, **opts)
    assert list(null.columns) == divergence.COLUMNS and len(null) == len(t)
    maps_b = [ref_maps(s.vision_encoder.received, "mean") for s in b]
    n = N_SIDE * N_SIDE
    for i in range(n_pairs):  # null[i] = JS(B_i, B_{i+1 mod P})
        p, q = maps_b[i], maps_b[(i + 1) % n_pairs]
        js = [jensenshannon((p[j] + eps) / (1 + n * eps), (q[j] + eps) / (1 + n * eps)) ** 2 for j in range(3)]
        np.testing.assert_allclose(null.loc[null["pair"] == i, "js"], js, rtol=1e-8)

    res = dict(confidence=0.9, n_resamples=999, seed=3, method=method)
    s = summary.divergence_summary(t, null=null, alternative="two-sided", **res)
    assert list(s["layer"]) == ["0", "1", "all"] and (s["n_pairs"] == n_pairs).all() and (s["n_null"] == 8).all()
    for (j, layer), m in itertools.product(enumerate(["0", "1", "all"]), summary.MEASURES):
        x = t.loc[t["layer"] == layer, m].to_numpy()
        xn = null.loc[null["layer"] == layer, m].to_numpy()
        ci = sps.bootstrap((x,), np.mean, n_resamples=999, confidence_level=0.9, method=method,
                           **{RNG_KW: np.random.default_rng(3)}).confidence_interval
        row = s.iloc[j]
        assert row[m] == pytest.approx(x.mean(), rel=1e-12)
        assert [row[f"{m}_ci_low"], row[f"{m}_ci_high"]] == pytest.approx([ci.low, ci.high], rel=1e-10)
        assert row[f"{m}_null"] == pytest.approx(xn.mean(), rel=1e-12)
        # exact sign-flip test (2^8 = 256 ≤ 999 sign vectors), enumerated here
        d = x - xn
        flips = np.array(list(itertools.product([-1, 1], repeat=n_pairs)))
        null_means = (flips * d).mean(1)
        p = np.mean(np.abs(null_means) >= abs(d.mean()) * (1 - 1e-12))
        assert row[f"{m}_p"] == pytest.approx(p, rel=1e-9)
    # BH over the three rows, by hand
    p = s["js_p"].to_numpy()
    order = np.argsort(p)
    adj = np.minimum.accumulate((p[order] * 3 / np.arange(1, 4))[::-1])[::-1]
    np.testing.assert_allclose(s["js_p_adj"].to_numpy()[order], np.minimum(adj, 1), rtol=1e-12)
    # the planted layer's JS lies above the between-scene level
    assert s.loc[1, "js"] > s.loc[0, "js"]


def test_summary_detects_a_divergence_above_and_below_the_reference():
    rng = np.random.default_rng(2)
    n = N_SIDE * N_SIDE
    b = [enc_sample(rng.dirichlet(np.full(n, 5.0), size=(2, 2))) for _ in range(10)]
    spike = np.zeros(n)
    spike[0] = 1.0
    far = [enc_sample(np.broadcast_to(0.9 * spike + 0.1 / n, (2, 2, n)).copy()) for _ in range(10)]
    opts = dict(source="received", head_pooling="mean", epsilon=1e-4, top_fraction=0.1)
    null = encoder.encoder_within_condition(b, **opts)
    res = dict(confidence=0.95, n_resamples=1999, seed=0, method="percentile")
    up = summary.divergence_summary(encoder.encoder_divergence(far, b, **opts), null=null, alternative="greater",
                                    **res)
    assert (up["js_p_adj"] < 0.01).all() and (up["js"] > up["js_null"]).all()
    same = summary.divergence_summary(encoder.encoder_divergence(b, b, **opts), null=null, alternative="less", **res)
    assert (same["js"] == 0).all() and (same["js_p_adj"] < 0.01).all()
    assert (same["js_ci_low"] == 0).all() and (same["js_ci_high"] == 0).all()


def test_summary_of_the_language_model_table_and_small_null():
    rng = np.random.default_rng(4)
    a = [make_sample(rng.dirichlet(np.ones(16), size=(1, 2, 2))) for _ in range(2)]
    b = [make_sample(rng.dirichlet(np.ones(16), size=(1, 2, 2))) for _ in range(2)]
    opts = dict(step_pooling="first", renormalize=True, min_vision_share=1e-4, head_pooling="mean", epsilon=1e-6,
                top_fraction=0.25)
    t = divergence.divergence_table(a, b, **opts)
    null = divergence.within_condition_table(b, **opts)
    assert null[list(summary.MEASURES)].isna().all().all()  # fewer than 3 samples: no reference
    s = summary.divergence_summary(t, null=null, confidence=0.9, n_resamples=99, seed=0, method="percentile")
    assert list(s["layer"]) == ["0", "1", "all"] and (s["n_pairs"] == 2).all() and (s["n_null"] == 0).all()
    assert s[["js_null", "js_p", "js_p_adj", "kl_ab_null", "hausdorff_p"]].isna().all().all()
    assert s["js"].tolist() == pytest.approx(t.groupby("layer", sort=False)["js"].mean().tolist())
    plain = summary.divergence_summary(t, null=None, confidence=0.9, n_resamples=99, seed=0, method="percentile")
    assert "js_null" not in plain.columns and plain["js_ci_low"].notna().all()
    with pytest.raises(ValueError, match="pairs and layers"):
        summary.divergence_summary(t, null=null[null["layer"] != "all"], confidence=0.9, n_resamples=99, seed=0,
                                   method="percentile")
    with pytest.raises(ValueError, match="lacks column"):
        summary.divergence_summary(t.drop(columns="js"), null=None, confidence=0.9, n_resamples=99, seed=0,
                                   method="percentile")
