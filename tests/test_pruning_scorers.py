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


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_own_head_statistics_match_independent_formulas():
    a = HEADS
    np.testing.assert_allclose(sc.head_statistic(a, "renormalised_entropy", top_k=2), [scipy_entropy(h) for h in a])
    np.testing.assert_allclose(sc.head_statistic(a, "renormalised_entropy", top_k=2)[:3],
                               [math.log(4), 0.0, scipy_entropy([3, 1])])
    np.testing.assert_allclose(sc.head_statistic(a, "renormalised_gini", top_k=2), [_pairwise_gini(h) for h in a])
    np.testing.assert_allclose(sc.head_statistic(a, "renormalised_gini", top_k=2)[:3], [0.0, 0.75, 0.625])
    np.testing.assert_allclose(sc.head_statistic(a, "l2_norm", top_k=2), np.linalg.norm(a, axis=1))
    conc = 1 - np.array([scipy_entropy(h) for h in a]) / math.log(4)
    peak = a.max(1) / a.sum(1)
    np.testing.assert_allclose(sc.head_statistic(a, "entropy_peak_mass", top_k=2), (conc + peak + a.sum(1)) / 3)


def test_finepruner_head_statistics_apply_the_second_softmax():
    a = HEADS
    p = _softmax(a)  # FinePruner softmaxes the (already softmaxed) image slice again
    np.testing.assert_allclose(sc.head_statistic(a, "variance", top_k=2), [np.var(h, ddof=1) for h in a])
    np.testing.assert_allclose(sc.head_statistic(a, "sum", top_k=2), a.sum(1))
    np.testing.assert_allclose(sc.head_statistic(a, "entropy", top_k=2), [scipy_entropy(h) for h in p], rtol=1e-6)
    np.testing.assert_allclose(sc.head_statistic(a, "sparsity", top_k=2), (p ** 2).sum(1))
    np.testing.assert_allclose(sc.head_statistic(a, "gini_coefficient", top_k=2), [_pairwise_gini(h) for h in p])
    significant = (p > 0.01).sum(1)  # every softmaxed weight of a 4-token slice exceeds 0.01
    assert significant.tolist() == [4, 4, 4, 4]
    np.testing.assert_allclose(sc.head_statistic(a, "weighted_quality", top_k=2),
                               0.4 * p.max(1) + 0.4 * (p ** 2).sum(1) + 0.2 / 4)
    np.testing.assert_allclose(sc.head_statistic(a, "top_k_sum", top_k=2), [0.5, 0.3, 0.8, 0.81])
    np.testing.assert_allclose(sc.head_statistic(a, "attention_range", top_k=2), [0.0, 0.3, 0.6, 0.57])


@pytest.mark.parametrize("strategy, winner", [
    ("sum", 0),                    # mass 1.0 (h0, h3: the tie goes to the lower index) > 0.8 (h2)
    ("variance", 2),               # 0.08 > 0.0754 (h3) > 0.0225 (h1) > 0 (ddof 1)
    ("entropy", 2),                # after the second softmax: H(p) 1.35290 (h2) < 1.35346 (h3)
    ("max_attention", 3),          # 0.66
    ("attention_range", 2),        # 0.60 > 0.57 (h3's floor is 0.09)
    ("sparsity", 3),               # Σ p² = 0.267830 (h3) > 0.267795 (h2)
    ("top_k_sum", 3),              # 0.81 > 0.80 (k = 2)
    ("weighted_quality", 3),       # 0.4 max p + 0.4 Σ p² + 0.2 / 4: 0.3033 (h3) > 0.3016 (h2)
    ("gini_coefficient", 2),       # Gini of p: 0.1332 (h2) > 0.1217 (h3)
    ("renormalised_entropy", 1),   # a one-hot head has entropy 0 (the lowest is chosen)
    ("l2_norm", 3),                # ‖h3‖ = 0.690 > ‖h2‖ = 0.632
    ("entropy_peak_mass", 1),      # (1 + 1 + 0.3) / 3 = 0.767 > 0.715 (h2)
    ("renormalised_gini", 1),      # 3/4 > 0.625
])
def test_each_head_strategy_selects_its_closed_form_winner(strategy, winner):
    assert sc.select_heads(HEADS, strategy, n_heads=1, top_k=2).tolist() == [winner]
    np.testing.assert_allclose(sc.head_score(HEADS, strategy, n_heads=1, top_k=2), HEADS[winner])


def test_the_second_softmax_changes_the_chosen_head():
    # FinePruner's entropy and Gini (of softmax(a)) and vlmattn's renormalised ones (of a / Σ a) differ
    # here: the one-hot head with little mass is the most concentrated renormalised, the least after softmax
    assert sc.select_heads(HEADS, "entropy", n_heads=1, top_k=2).tolist() == [2]
    assert sc.select_heads(HEADS, "renormalised_entropy", n_heads=1, top_k=2).tolist() == [1]
    assert sc.select_heads(HEADS, "gini_coefficient", n_heads=1, top_k=2).tolist() == [2]
    assert sc.select_heads(HEADS, "renormalised_gini", n_heads=1, top_k=2).tolist() == [1]


def test_finepruner_sum_keeps_the_top_heads_and_all_heads_is_fastv():
    # sum: the n heads with the most image attention, averaged; all_heads: every head, averaged (FastV)
    assert sc.select_heads(HEADS, "sum", n_heads=2, top_k=2).tolist() == [0, 3]  # masses 1, 0.3, 0.8, 1
    np.testing.assert_allclose(sc.head_score(HEADS, "sum", n_heads=2, top_k=2), (HEADS[0] + HEADS[3]) / 2)
    np.testing.assert_allclose(sc.head_score(HEADS, "all_heads", n_heads=1, top_k=2), HEADS.mean(0))
    assert not np.allclose(sc.head_score(HEADS, "sum", n_heads=2, top_k=2),
                           sc.head_score(HEADS, "all_heads", n_heads=1, top_k=2))


def test_selected_heads_are_averaged():
    # the two lowest renormalised entropies: h1 (0) and h2 (0.562)
    assert sc.select_heads(HEADS, "renormalised_entropy", n_heads=2, top_k=2).tolist() == [1, 2]
    np.testing.assert_allclose(sc.head_score(HEADS, "renormalised_entropy", n_heads=2, top_k=2),
                               (HEADS[1] + HEADS[2]) / 2)
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


def _mass(vis, layer=1):
    """M_r: each row's image attention summed over heads at the scoring layer."""
    return vis[layer].sum(-1).sum(0)


def test_planted_row_wins_max_attention_token():
    s, vis = _all_text_sample()
    planted = 2  # instruction position 9
    r = N_BEFORE + planted
    vis[:, :, r] = [0.3, 0.3, 0.2, 0.19]  # mass 0.99 per head beats any other row at every layer
    s = _prompt_sample(vis, s.prefill_positions)
    for q in ("max_attention_token", "max_share_instruction"):
        w = sc.query_weights(q, s.prefill_positions, s.vision_index, s.prefill.shape[-1], row_mass=_mass(vis))
        assert w.tolist() == [1.0 if i == r else 0.0 for i in range(len(w))]
    score = sc.attention_scores(s.prefill, s.prefill_positions, s.vision_index, s.vision_index,
                                prune_layer=2, query="max_attention_token", head="all_heads", n_heads=1, top_k=1)
    np.testing.assert_allclose(score, vis[1, :, r].mean(0))


def test_query_weights_closed_forms():
    s, vis = _all_text_sample()
    pos, n = s.prefill_positions, s.prefill.shape[-1]
    idx = {int(p): i for i, p in enumerate(pos)}
    mass = _mass(vis)

    def weights(q):
        w = sc.query_weights(q, pos, s.vision_index, n, row_mass=mass)
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        return {int(p): w[idx[int(p)]] for p in pos if w[idx[int(p)]] > 0}

    ramp = np.linspace(0.5, 1.0, 5) / 3.75  # FinePruner's recent-token weights
    assert weights("last_token") == {11: 1.0}
    assert weights("last_n_tokens") == pytest.approx({9: 1 / 3, 10: 1 / 3, 11: 1 / 3})
    assert weights("last_5_tokens") == pytest.approx({p: 0.2 for p in INSTR})
    assert weights("text_tokens_only") == pytest.approx({p: 0.2 for p in INSTR})
    assert weights("weighted_recent") == pytest.approx({p: ramp[j] for j, p in enumerate(INSTR)})
    assert weights("system_and_text") == pytest.approx({int(p): 1 / 8 for p in pos})
    soft = np.exp(mass) / np.exp(mass).sum()  # softmax over every text row (system rows have M = 0)
    assert weights("attention_weighted") == pytest.approx({int(p): soft[i] for i, p in enumerate(pos)})
    assert weights("adaptive_by_length") == pytest.approx(weights("weighted_recent"))  # m = 5: 4 ≤ m ≤ 10
    # vlmattn's own rules
    assert weights("recent_mean") == pytest.approx({10: 0.5, 11: 0.5})  # m = 5 → ⌈5/4⌉ = 2 rows
    assert weights("instruction_ramp") == pytest.approx({p: (j + 1) / 15 for j, p in enumerate(INSTR)})
    sh = mass[[idx[p] for p in INSTR]]
    assert weights("share_weighted") == pytest.approx({p: sh[j] / sh.sum() for j, p in enumerate(INSTR)})
    # the combined image slice is the weighted sum of the rows at layer K − 1
    a = sc.query_attention(sc.image_slice(s.prefill, s.vision_index, layer=1), pos, s.vision_index, n,
                           "instruction_ramp")
    expected = sum((j + 1) / 15 * vis[1, :, idx[p]] for j, p in enumerate(INSTR))
    np.testing.assert_allclose(a, expected)


@pytest.mark.parametrize("m, rule", [(0, "last_token"), (2, "text_tokens_only"), (3, "text_tokens_only"),
                                     (4, "weighted_recent:4"), (10, "weighted_recent:5"), (11, "attention_weighted")])
def test_adaptive_by_length_switches_on_the_instruction_length(m, rule):
    # FinePruner: m = 0 → last token; m ≤ 3 → the instruction; m ≤ 10 → the last min(5, m) positions
    # ramped 0.5 … 1; longer → the softmax-weighted text rows
    n_sys = 3
    n = n_sys + V + m
    positions = np.setdiff1d(np.arange(n), np.arange(n_sys, n_sys + V))
    if m == 0:
        positions = np.append(positions, n - 1)  # the last image token's row
    rng = np.random.default_rng(m)
    mass = rng.random(len(positions))
    image = np.arange(n_sys, n_sys + V)
    w = sc.query_weights("adaptive_by_length", positions, image, n, row_mass=mass)
    name, _, window = rule.partition(":")
    if name == "weighted_recent":
        expected = np.zeros(len(positions))
        ramp = np.linspace(0.5, 1.0, int(window))
        expected[-int(window):] = ramp / ramp.sum()
    elif name == "attention_weighted":
        expected = np.exp(mass) / np.exp(mass).sum()
    else:
        expected = sc.query_weights(name, positions, image, n, row_mass=mass)
    np.testing.assert_allclose(w, expected)
    if m == 11:  # vlmattn's recent_mean reads 3 rows of the instruction with equal weights instead
        own = sc.query_weights("recent_mean", positions, image, n, row_mass=mass)
        np.testing.assert_allclose(own[-3:], 1 / 3)


def _published_rule(attn, n_sys, n_vis, query, n_heads):
    """An independent torch transcription of LLaVA-FinePruner-Head's study B on one layer's full
    attention ``attn [H, N, N]`` (system prompt 0 … n_sys − 1, image n_sys … n_sys + n_vis − 1, then the
    instruction), with its fixed head selection ``variance``: the token scores ``[V]``."""
    import torch

    t = torch.as_tensor(attn)
    img = slice(n_sys, n_sys + n_vis)
    n = t.shape[1]
    start = n_sys + n_vis
    text = torch.cat([torch.arange(n_sys), torch.arange(start, n)])
    m = n - start

    def recent(window):
        rows = t[:, max(0, n - window):, img]
        w = torch.linspace(0.5, 1.0, rows.shape[1], dtype=t.dtype)
        return (rows * (w / w.sum()).view(1, -1, 1)).sum(1)

    if query == "adaptive_by_length":
        query = ("last_token" if m == 0 else "text_tokens_only" if m <= 3 else
                 f"recent:{min(5, m)}" if m <= 10 else "attention_weighted")
    if query == "last_token":
        a = t[:, -1, img]
    elif query == "last_n_tokens":
        a = t[:, -3:, img].mean(1)
    elif query == "last_5_tokens":
        a = t[:, -5:, img].mean(1)
    elif query == "text_tokens_only":
        a = t[:, start:, img].mean(1) if m else t[:, -1, img]
    elif query == "weighted_recent":
        a = recent(5)
    elif query.startswith("recent:"):
        a = recent(int(query.split(":")[1]))
    elif query == "system_and_text":
        a = t[:, text, img].mean(1)
    elif query == "attention_weighted":
        rows = t[:, text, img]
        w = torch.softmax(rows.sum(dim=(0, 2)), dim=0)
        a = (rows * w.view(1, -1, 1)).sum(1)
    elif query == "max_attention_token":
        rows = t[:, text, img]
        a = rows[:, rows.sum(dim=(0, 2)).argmax()]
    heads = a.var(dim=-1).topk(k=n_heads).indices
    return a[heads].mean(0).numpy()


@pytest.mark.parametrize("m", [2, 5, 14])
@pytest.mark.parametrize("query", sc.FINEPRUNER_QUERY_STRATEGIES)
def test_finepruner_query_rules_match_a_transcription_of_the_published_code(query, m):
    n_sys, n_vis, n_layers, n_heads = 5, 16, 2, 6
    n = n_sys + n_vis + m
    rng = np.random.default_rng([m, len(query)])
    logits = rng.normal(size=(n_layers, n_heads, n, n)) * 2
    logits[..., n_sys:n_sys + n_vis] += 1.0  # image keys a little more attended, as in a VLM
    causal = np.tril(np.ones((n, n), bool))
    logits = np.where(causal, logits, -np.inf)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    image = np.arange(n_sys, n_sys + n_vis)
    ours = sc.attention_scores(attn, np.arange(n), image, image, prune_layer=2, query=query, head="variance",
                               n_heads=3, top_k=10)
    theirs = _published_rule(attn[1], n_sys, n_vis, query, n_heads=3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14)
    assert np.array_equal(sc.keep_indices(ours, 5), np.sort(np.argsort(-theirs)[:5]))


def test_missing_rows_name_the_prefill_rows_option():
    s, vis = _all_text_sample()
    after = np.isin(s.prefill_positions, INSTR)
    only_after = _prompt_sample(vis[:, :, after], s.prefill_positions[after])
    last = _prompt_sample(vis[:, :, -1:], s.prefill_positions[-1:])
    kw = dict(prune_layer=1, head="all_heads", n_heads=1, top_k=1)
    with pytest.raises(ValueError, match="prefill_rows: all_text"):
        sc.attention_scores(only_after.prefill, only_after.prefill_positions, only_after.vision_index,
                            only_after.vision_index, query="system_and_text", **kw)
    with pytest.raises(ValueError, match="prefill_rows: text_after_image"):
        sc.attention_scores(last.prefill, last.prefill_positions, last.vision_index, last.vision_index,
                            query="last_n_tokens", **kw)
    assert offline.available_queries(last) == ["last_token"]
    # with 2 instruction tokens the last 3 positions include an image token's row
    short = np.array([0, 1, 2, 7, 8])
    with pytest.raises(ValueError, match="prefill_rows: all"):
        sc.query_weights("last_n_tokens", short, np.arange(3, 7), 9, row_mass=np.zeros(5))
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


@pytest.mark.parametrize("n_layers, k, expected", [
    (32, 2, {192: 166, 128: 98, 64: 30}),   # LLaVA-FinePruner-Head's kept counts for LLaVA-1.5-7B
    (32, 3, {192: 152, 128: 82, 64: 11}),
    (40, 2, {192: 172, 128: 104, 64: 37}),  # and for 13B
    (40, 3, {192: 161, 128: 92, 64: 22}),
])
def test_layer_averaged_budgets_reproduce_the_published_kept_counts(n_layers, k, expected):
    for target, kept in expected.items():
        got = offline.kept_count(target, 576, convention="layer_averaged", n_layers=n_layers, prune_layer=k)
        assert got == kept
        # averaged over the layers, R kept from layer K on is within half a token of the budget
        assert abs(offline.average_tokens(got, 576, n_layers=n_layers, prune_layer=k) - target) <= 0.5
        assert offline.kept_count(target, 576, convention="kept", n_layers=n_layers, prune_layer=k) == target
    counts = offline.model_budgets(576, budgets=[192, 128, 64], keep_ratios=[], convention="layer_averaged",
                                   n_layers=n_layers, prune_layer=k)
    assert counts.tolist() == sorted(expected.values(), reverse=True)


def test_layer_averaged_budget_below_the_first_layers_share_is_refused():
    # the toy model: L = 2, K = 1, V = 64 → R = 2T − 64, so T = 21 keeps nothing
    with pytest.raises(ValueError, match="layer-averaged budget of 21 .* needs at least 33"):
        offline.kept_count(21, 64, convention="layer_averaged", n_layers=2, prune_layer=1)
    assert offline.kept_count(33, 64, convention="layer_averaged", n_layers=2, prune_layer=1) == 2
    with pytest.raises(ValueError, match="unknown budget convention"):
        offline.kept_count(21, 64, convention="averaged", n_layers=2, prune_layer=1)
