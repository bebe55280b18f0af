"""Pruning scores on hand-made attention: head and query strategies against closed forms, the published
signals' layer and head conventions, the baselines and the offline recall on a planted object."""

import math

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from tests.synthetic_attention import encoder_attention, make_sample, tile, with_prefill
from vlmattn.pruning import offline
from vlmattn.pruning import scorers as sc

# image slice [H, V] with closed-form statistics (hand-computed winners, see each test)
HEADS = np.array([
    [0.25, 0.25, 0.25, 0.25],  # h0: uniform, full mass
    [0.30, 0.00, 0.00, 0.00],  # h1: one-hot, little mass
    [0.60, 0.20, 0.00, 0.00],  # h2: two tokens
    [0.66, 0.15, 0.10, 0.09],  # h3: one peak over a floor
])


def _pairwise_gini(x):
    x = np.asarray(x, np.float64)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) * x.sum())


def test_head_statistics_match_independent_formulas():
    a = HEADS
    np.testing.assert_allclose(sc.head_statistic(a, "variance", top_k=2), [np.var(h) for h in a])
    np.testing.assert_allclose(sc.head_statistic(a, "entropy", top_k=2), [scipy_entropy(h) for h in a])
    np.testing.assert_allclose(sc.head_statistic(a, "entropy", top_k=2)[:3], [math.log(4), 0.0, scipy_entropy([3, 1])])
    np.testing.assert_allclose(sc.head_statistic(a, "gini_coefficient", top_k=2), [_pairwise_gini(h) for h in a])
    np.testing.assert_allclose(sc.head_statistic(a, "gini_coefficient", top_k=2)[:3], [0.0, 0.75, 0.625])
    np.testing.assert_allclose(sc.head_statistic(a, "sparsity", top_k=2), np.linalg.norm(a, axis=1))
    np.testing.assert_allclose(sc.head_statistic(a, "top_k_sum", top_k=2), [0.5, 0.3, 0.8, 0.81])
    np.testing.assert_allclose(sc.head_statistic(a, "attention_range", top_k=2), [0.0, 0.3, 0.6, 0.57])
    conc = 1 - np.array([scipy_entropy(h) for h in a]) / math.log(4)
    peak = a.max(1) / a.sum(1)
    np.testing.assert_allclose(sc.head_statistic(a, "weighted_quality", top_k=2), (conc + peak + a.sum(1)) / 3)


@pytest.mark.parametrize("strategy, winner", [
    ("variance", 2),           # 0.06 > 0.0566 (h3) > 0.0169 (h1) > 0
    ("entropy", 1),            # a one-hot head has entropy 0 (the lowest is chosen)
    ("max_attention", 3),      # 0.66
    ("attention_range", 2),    # 0.60 > 0.57 (h3's floor is 0.09)
    ("sparsity", 3),           # ‖h3‖ = 0.690 > ‖h2‖ = 0.632
    ("top_k_sum", 3),          # 0.81 > 0.80 (k = 2)
    ("weighted_quality", 1),   # (1 + 1 + 0.3) / 3 = 0.767 > 0.715 (h2)
    ("gini_coefficient", 1),   # 3/4 > 0.625
])
def test_each_head_strategy_selects_its_closed_form_winner(strategy, winner):
    assert sc.select_heads(HEADS, strategy, n_heads=1, top_k=2).tolist() == [winner]
    np.testing.assert_allclose(sc.head_score(HEADS, strategy, n_heads=1, top_k=2), HEADS[winner])


def test_selected_heads_are_averaged_and_sum_takes_every_head():
    # the two lowest-entropy heads: h1 (0) and h2 (0.562)
    assert sc.select_heads(HEADS, "entropy", n_heads=2, top_k=2).tolist() == [1, 2]
    np.testing.assert_allclose(sc.head_score(HEADS, "entropy", n_heads=2, top_k=2), (HEADS[1] + HEADS[2]) / 2)
    np.testing.assert_allclose(sc.head_score(HEADS, "sum", n_heads=1, top_k=2), HEADS.sum(0))
    with pytest.raises(ValueError, match="n_heads"):
        sc.select_heads(HEADS, "variance", n_heads=5, top_k=2)
    with pytest.raises(ValueError, match="unknown head strategy"):
        sc.head_statistic(HEADS, "median", top_k=2)


# a prompt of 3 system tokens, 4 vision tokens (positions 3-6) and 5 instruction tokens (7-11)
N_BEFORE, V, N_AFTER, L, H = 3, 4, 5, 3, 2
INSTR = np.arange(N_BEFORE + V, N_BEFORE + V + N_AFTER)


def _prompt_sample(vision_rows, positions):
    s = make_sample(np.full((1, L, H, V), 0.25), n_before=N_BEFORE, n_after=N_AFTER)
    return with_prefill(s, positions, vision_rows)


def _all_text_sample(seed=0):
    """Rows at every text position; system rows see no vision token (causal); instruction rows random."""
    positions = np.setdiff1d(np.arange(N_BEFORE + V + N_AFTER), np.arange(N_BEFORE, N_BEFORE + V))
    rng = np.random.default_rng(seed)
    vis = rng.dirichlet(np.ones(V + 1), size=(L, H, len(positions)))[..., :V]
    vis[:, :, :N_BEFORE] = 0
    return _prompt_sample(vis, positions), vis


def test_planted_row_wins_max_attention_token():
    s, vis = _all_text_sample()
    planted = 2  # instruction position 9
    r = N_BEFORE + planted
    vis[:, :, r] = [0.3, 0.3, 0.2, 0.19]  # share 0.99 beats any other row's mean share at every layer
    s = _prompt_sample(vis, s.prefill_positions)
    w = sc.query_weights("max_attention_token", s.prefill_positions, s.vision_index, s.prefill.shape[-1],
                         vision_share=vis[1].sum(-1).mean(0))
    assert w.tolist() == [1.0 if i == r else 0.0 for i in range(len(w))]
    score = sc.attention_scores(s.prefill, s.prefill_positions, s.vision_index, s.vision_index,
                                prune_layer=2, query="max_attention_token", head="sum", n_heads=1, top_k=1)
    np.testing.assert_allclose(score, vis[1, :, r].sum(0))


def test_query_weights_closed_forms():
    s, vis = _all_text_sample()
    pos, n = s.prefill_positions, s.prefill.shape[-1]
    idx = {int(p): i for i, p in enumerate(pos)}
    share = vis[1].sum(-1).mean(0)

    def weights(q):
        w = sc.query_weights(q, pos, s.vision_index, n, vision_share=share)
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        return {int(p): w[idx[int(p)]] for p in pos if w[idx[int(p)]] > 0}

    assert weights("last_token") == {11: 1.0}
    assert weights("last_n_tokens") == pytest.approx({9: 1 / 3, 10: 1 / 3, 11: 1 / 3})
    assert weights("last_5_tokens") == pytest.approx({p: 0.2 for p in INSTR})
    assert weights("text_tokens_only") == pytest.approx({p: 0.2 for p in INSTR})
    assert weights("weighted_recent") == pytest.approx({p: (j + 1) / 15 for j, p in enumerate(INSTR)})
    assert weights("system_and_text") == pytest.approx({int(p): 1 / 8 for p in pos})
    sh = share[[idx[p] for p in INSTR]]
    assert weights("attention_weighted") == pytest.approx({p: sh[j] / sh.sum() for j, p in enumerate(INSTR)})
    assert weights("adaptive_by_length") == pytest.approx({10: 0.5, 11: 0.5})  # m = 5 → ⌈5/4⌉ = 2 rows
    # the combined image slice is the weighted sum of the rows at layer K − 1
    a = sc.query_attention(sc.image_slice(s.prefill, s.vision_index, layer=1), pos, s.vision_index, n,
                           "weighted_recent")
    expected = sum((j + 1) / 15 * vis[1, :, idx[p]] for j, p in enumerate(INSTR))
    np.testing.assert_allclose(a, expected)


def test_missing_rows_name_the_prefill_rows_option():
    s, vis = _all_text_sample()
    after = np.isin(s.prefill_positions, INSTR)
    only_after = _prompt_sample(vis[:, :, after], s.prefill_positions[after])
    last = _prompt_sample(vis[:, :, -1:], s.prefill_positions[-1:])
    kw = dict(prune_layer=1, head="sum", n_heads=1, top_k=1)
    with pytest.raises(ValueError, match="prefill_rows: all_text"):
        sc.attention_scores(only_after.prefill, only_after.prefill_positions, only_after.vision_index,
                            only_after.vision_index, query="system_and_text", **kw)
    with pytest.raises(ValueError, match="prefill_rows: text_after_image"):
        sc.attention_scores(last.prefill, last.prefill_positions, last.vision_index, last.vision_index,
                            query="last_n_tokens", **kw)
    assert offline.available_queries(last) == ["last_token"]
    assert "system_and_text" not in offline.available_queries(only_after)
    assert offline.available_queries(s) == list(sc.QUERY_STRATEGIES)


def test_fastv_reads_layer_k_minus_1_and_pyramiddrop_layer_k():
    s, vis = _all_text_sample(seed=3)
    pos, r = s.prefill_positions, len(s.prefill_positions) - 1
    for k in (1, 2):
        np.testing.assert_allclose(sc.fastv(s.prefill, pos, s.vision_index, prune_layer=k), vis[k - 1, :, r].mean(0))
        np.testing.assert_allclose(sc.pyramiddrop(s.prefill, pos, s.vision_index, prune_layer=k), vis[k, :, r].mean(0))
    with pytest.raises(ValueError, match="prune_layer"):
        sc.fastv(s.prefill, pos, s.vision_index, prune_layer=0)
    with pytest.raises(ValueError, match="prune_layer"):
        sc.score_layer(L + 1, L)


def test_sparsevlm_averages_the_raters_rows():
    s, vis = _all_text_sample(seed=4)
    e_vis = np.tile([1.0, 0.0], (V, 1))
    e_txt = np.array([[5.0, 0], [0, 0], [5.0, 0], [0, 0], [0, 0]])  # M_j = e⁵/(2e⁵+3) for j = 0, 2
    assert sc.sparsevlm_raters(e_vis, e_txt).tolist() == [True, False, True, False, False]
    score = sc.sparsevlm(s.prefill, s.prefill_positions, s.vision_index, prune_layer=3, text_positions=INSTR,
                         vision_embeddings=e_vis, text_embeddings=e_txt)
    rows = [N_BEFORE + 0, N_BEFORE + 2]  # row indices of positions 7 and 9
    np.testing.assert_allclose(score, vis[2][:, rows].mean((0, 1)))
    with pytest.raises(ValueError, match="share D"):
        sc.sparsevlm_raters(e_vis, e_txt[:, :1])


def test_encoder_cls_scores_penultimate_layer_mean_and_sum_over_heads():
    rng = np.random.default_rng(5)
    cls = rng.dirichlet(np.ones(16), size=(3, 2))  # [L_enc, H, P]
    ve = encoder_attention(cls, cls_attention=cls)
    ve.patch_token = np.arange(16)
    np.testing.assert_allclose(sc.fastervlm(ve.cls_attention, ve.patch_token, 16), cls[1].mean(0))
    np.testing.assert_allclose(sc.visionzip_dominant(ve.cls_attention, ve.patch_token, 16), cls[1].sum(0))
    # 2×2 patches merged into one token (Qwen-like): the token sums its patches
    merged = np.array([(r // 2) * 2 + c // 2 for r in range(4) for c in range(4)])
    np.testing.assert_allclose(sc.fastervlm(cls, merged, 4), np.bincount(merged, cls[1].mean(0)))
    no_cls = encoder_attention(cls)
    with pytest.raises(ValueError, match="no CLS token"):
        sc.fastervlm(no_cls.cls_attention, np.arange(16), 16)
    with pytest.raises(ValueError, match="encoder layer -4 does not exist: the vision encoder has 3 layers"):
        sc.fastervlm(cls, np.arange(16), 16, layer=-4)


def test_pooling_picks_a_uniform_grid():
    keep = sc.keep_indices(sc.pooling_scores(np.array([[24, 24]]), 64), 64)
    rows, cols = np.divmod(keep, 24)
    assert sorted(set(rows)) == list(range(1, 24, 3)) and sorted(set(cols)) == list(range(1, 24, 3))
    assert len(keep) == 64
    for budget in (1, 7, 50, 100, 575, 576):  # budgets that are not perfect squares
        k = sc.grid_subsample(24, 24, budget)
        assert len(np.unique(k)) == budget
        counts = np.bincount(k // 24)
        per_row = counts[counts > 0]
        assert per_row.max() - per_row.min() <= 1
    # two images split the budget by their token counts: 16 and 48 tokens, budget 8 → 2 and 6
    s = sc.pooling_scores(np.array([[4, 4], [6, 8]]), 8)
    assert s[:16].sum() == 2 and s[16:].sum() == 6


def test_random_is_deterministic_and_changes_with_the_draw():
    a = sc.keep_indices(sc.random_scores(576, seed=0, draw=0), 64)
    assert np.array_equal(a, sc.keep_indices(sc.random_scores(576, seed=0, draw=0), 64))
    assert not np.array_equal(a, sc.keep_indices(sc.random_scores(576, seed=0, draw=1), 64))
    assert not np.array_equal(a, sc.keep_indices(sc.random_scores(576, seed=1, draw=0), 64))


def test_keep_indices_top_k_ties_by_index():
    assert sc.keep_indices(np.array([1.0, 2, 2, 0, 2]), 2).tolist() == [1, 2]
    assert sc.keep_indices(np.array([0.5, 0.1, 0.9]), 2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="budget"):
        sc.keep_indices(np.zeros(3), 4)


def test_offline_recall_and_retained_mass_on_a_planted_object():
    # 4×4 grid on a 64-pixel image; the object covers the top-left 2×2 tokens (0, 1, 4, 5)
    obj = np.array([0, 1, 4, 5])
    decode = np.zeros(16)
    decode[obj] = 0.2  # the answer row puts 0.8 on the object, 0.2 on token 15
    decode[15] = 0.2
    s = make_sample(tile(decode, n_steps=2, n_layers=L, n_heads=H), boxes=[[0, 0, 32, 32]], labels=["cat"])
    last = np.zeros((L, H, 1, 16))
    last[..., obj] = 0.2  # the last prompt row also looks at the object
    s = with_prefill(s, [len(s.input_ids) - 1], last)
    assert np.flatnonzero(offline.object_mask(s)).tolist() == obj.tolist()
    scores = offline.sample_scores(s, prune_layer=2, head_strategies=["variance"], query_strategies=[],
                                   fixed_query="last_token", fixed_head="variance", n_heads=1, top_k=4,
                                   seed=0, n_draws=2)
    table = offline.offline_table(s, scores, [4, 8], prune_layer=2, step=0, pooling=True)
    table = table.set_index(["scorer", "budget"])
    assert table.loc[("fastv", 4), "recall"] == 1.0
    assert table.loc[("fastv", 4), "retained_mass"] == pytest.approx(0.8)
    assert table.loc[("head:variance", 4), "recall"] == 1.0
    assert table.loc[("fastv", 4), "chance"] == 0.25
    # pooling with 4 of 16 keeps tokens 5, 7, 13, 15: one object token, and 15's mass 0.2 + 5's 0.2
    assert table.loc[("pooling", 4), "recall"] == 0.25
    assert table.loc[("pooling", 4), "retained_mass"] == pytest.approx(0.4)
    for d in range(2):
        keep = sc.keep_indices(sc.random_scores(16, seed=0, draw=d), 8)
        assert table.loc[(f"random:{d}", 8), "recall"] == np.isin(obj, keep).mean()
    assert offline.scaled_budgets(576).tolist() == [192, 128, 64]
    assert offline.scaled_budgets(16).tolist() == [5, 4, 2]  # 5.33, 3.56, 1.78
