"""Head ablation in the capture attention function and the causal table of ranked heads.

Independent references: zero-ablating a head equals zeroing that head's input columns of ``o_proj``
in a copy of the weights; forward pre-hooks on ``o_proj`` see each head's slice of the attention
output, which must be untouched for other heads and earlier layers and 0 / the mean over positions
(float64 reference) for the ablated head; the causal table's figures are recomputed from
:func:`answer_logprob` and from its own draws.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vlmattn.contrasts.ablation import answer_logprob, answer_token_id, causal_table, percentile, random_sets
from vlmattn.engine.capture import CaptureError, HeadAblation, ablating
from vlmattn.engine.inference import capture_attention, model_inputs

FAMILIES = ("llava", "qwen2_5_vl")
QUESTION = "Is there anything in the top left corner?"


def scene(x: int = 10, colour=(200, 40, 40)) -> Image.Image:
    im = Image.new("RGB", (64, 48), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([x, 5, x + 25, 30], fill=colour)
    return im


def layers(lm):
    return lm.model.model.language_model.layers


def sizes(lm) -> tuple[int, int, int]:
    cfg = lm.model.config.get_text_config()
    return cfg.num_hidden_layers, cfg.num_attention_heads, layers(lm)[0].self_attn.head_dim


@torch.no_grad()
def logits(model, inputs) -> torch.Tensor:
    return model(**inputs, use_cache=False).logits[0]


@torch.no_grad()
def o_proj_inputs(lm, inputs, ablation=None) -> list[torch.Tensor]:
    """Input ``[Q, H·D]`` of every layer's ``o_proj`` in one forward pass."""
    seen = []
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, args: seen.append(args[0][0].clone()))
             for layer in layers(lm)]
    try:
        with ablating(ablation):
            lm.model(**inputs, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return seen


# ------------------------------------------------------------------------------ capture function
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("heads", [{0: (1,)}, {1: (3,)}, {0: (0, 2), 1: (1,)}])
def test_zero_ablation_equals_zeroed_o_proj_columns(loaded, family, heads):
    lm = loaded(family)
    inputs = model_inputs(lm, scene(), QUESTION)
    _, _, dim = sizes(lm)
    edited = copy.deepcopy(lm.model)
    with torch.no_grad():
        for layer, hs in heads.items():
            weight = edited.model.language_model.layers[layer].self_attn.o_proj.weight
            for h in hs:
                weight[:, h * dim:(h + 1) * dim] = 0
    want = logits(edited, inputs)
    with ablating(HeadAblation(heads, "zero")):
        got = logits(lm.model, inputs)
    base = logits(lm.model, inputs)
    assert (got - base).abs().max() > 1e-4  # the ablation changes the output
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("layer, head", [(0, 2), (1, 1)])
def test_o_proj_inputs_of_ablated_run(loaded, family, mode, layer, head):
    lm = loaded(family)
    inputs = model_inputs(lm, scene(), QUESTION)
    n_layers, n_heads, dim = sizes(lm)
    base = o_proj_inputs(lm, inputs)
    got = o_proj_inputs(lm, inputs, HeadAblation({layer: (head,)}, mode))
    assert len(base) == len(got) == n_layers
    for earlier in range(layer):
        assert torch.equal(got[earlier], base[earlier])
    b = base[layer].reshape(-1, n_heads, dim)
    g = got[layer].reshape(-1, n_heads, dim)
    others = [h for h in range(n_heads) if h != head]
    assert torch.equal(g[:, others], b[:, others])
    if mode == "zero":
        assert (g[:, head] == 0).all()
    else:
        want = b[:, head].double().mean(dim=0)
        assert (g[:, head] == g[:1, head]).all()  # one vector at every position
        torch.testing.assert_close(g[0, head].double(), want, atol=1e-7, rtol=1e-6)
    if layer + 1 < n_layers:
        assert not torch.equal(got[layer + 1], base[layer + 1])


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_ablation_in_decode_reuses_the_prefill_mean(loaded, family):
    lm = loaded(family)
    inputs = model_inputs(lm, scene(), QUESTION)
    _, n_heads, dim = sizes(lm)
    layer, head, steps = 1, 2, 3
    seen = []
    hook = layers(lm)[layer].self_attn.o_proj.register_forward_pre_hook(
        lambda m, args: seen.append(args[0][0].reshape(-1, n_heads, dim)[:, head].clone()))
    try:
        base = o_proj_inputs(lm, inputs)[layer].reshape(-1, n_heads, dim)[:, head]
        seen.clear()
        with torch.no_grad(), ablating(HeadAblation({layer: (head,)}, "mean")):
            lm.model.generate(**inputs, max_new_tokens=steps, do_sample=False)
    finally:
        hook.remove()
    assert len(seen) == steps and seen[0].shape[0] == base.shape[0]
    assert (seen[0] == seen[0][:1]).all()  # the prefill mean at every prompt position
    torch.testing.assert_close(seen[0][0].double(), base.double().mean(dim=0), atol=1e-7, rtol=1e-6)
    for step in seen[1:]:  # each decode step: one position, the prefill's mean
        assert step.shape[0] == 1 and torch.equal(step[0], seen[0][0])


def test_mean_ablation_of_a_lone_decode_call_raises(loaded):
    lm = loaded("llava")
    ids = torch.tensor([[1]])
    with ablating(HeadAblation({0: (0,)}, "mean")), pytest.raises(CaptureError, match="single-position"):
        lm.model.model.language_model(input_ids=ids, use_cache=False)
    with ablating(HeadAblation({0: (0,)}, "zero")):  # zero needs no prefill
        lm.model.model.language_model(input_ids=ids, use_cache=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_leaving_the_context_restores_the_model(loaded, family):
    lm = loaded(family)
    inputs = model_inputs(lm, scene(), QUESTION)
    base = logits(lm.model, inputs)
    with ablating(HeadAblation({0: (0, 1), 1: (3,)}, "mean")):
        assert not torch.equal(logits(lm.model, inputs), base)
    assert torch.equal(logits(lm.model, inputs), base)
    with pytest.raises(RuntimeError, match="inside"), ablating(HeadAblation({0: (1,)}, "zero")):
        raise RuntimeError("inside")
    assert torch.equal(logits(lm.model, inputs), base)
    with ablating(None):
        assert torch.equal(logits(lm.model, inputs), base)


def test_capture_under_ablation_records_and_generates(loaded):
    lm = loaded("llava")
    plain = capture_attention(lm, scene(), QUESTION, max_new_tokens=3, vision_encoder=False)
    with ablating(HeadAblation({0: (0, 1, 2, 3), 1: (0, 1, 2, 3)}, "zero")):
        ablated = capture_attention(lm, scene(), QUESTION, max_new_tokens=3, vision_encoder=False)
    # layer 0's attention weights do not depend on any attention output; step 0's row is the prefill's
    np.testing.assert_array_equal(ablated.decode[0, 0], plain.decode[0, 0])
    assert not np.array_equal(ablated.decode[0, 1], plain.decode[0, 1])


def test_bad_ablations():
    with pytest.raises(ValueError, match="mode"):
        HeadAblation({0: (1,)}, "noise")
    with pytest.raises(ValueError, match="heads of layer 0"):
        HeadAblation({0: (-1,)}, "zero")
    with pytest.raises(ValueError, match="layers"):
        HeadAblation({"0": (1,)}, "zero")
    assert HeadAblation({0: [3, 1, 3], 2: ()}, "zero").heads == {0: (1, 3)}
    assert HeadAblation.from_pairs([(1, 2), (0, 1), (1, 0)], "mean").heads == {0: (1,), 1: (0, 2)}


def test_head_outside_the_layer_raises(loaded):
    lm = loaded("llava")
    with pytest.raises(ValueError, match="names head 4, but the layer has 4 heads"):
        answer_logprob(lm, scene(), QUESTION, 5, HeadAblation({0: (4,)}, "zero"))


# ---------------------------------------------------------------------------------- answer token
@pytest.mark.parametrize("family, answer", [("llava", "yes"), ("llava", "circle"), ("qwen2_5_vl", "red"),
                                            ("qwen2_5_vl", "yes")])
def test_answer_token_is_the_generated_first_token(loaded, family, answer):
    """The model is made to reply ``answer`` (a hook adds +100 to the logit of the reply's next token,
    the tokens being those that follow the prompt in the processor's encoding of the conversation);
    the first token of its stored reply text is then the first token it generated."""
    lm = loaded(family)
    messages = lm.adapter.messages(QUESTION)
    prompt = lm.processor.apply_chat_template(messages, add_generation_prompt=True)
    full = lm.processor.apply_chat_template(lm.adapter.messages(QUESTION, answer))
    p_ids = lm.processor(images=scene(), text=prompt, return_tensors="pt")["input_ids"][0].tolist()
    f_ids = lm.processor(images=scene(), text=full, return_tensors="pt")["input_ids"][0].tolist()
    assert f_ids[: len(p_ids)] == p_ids
    reply = f_ids[len(p_ids):]
    calls = []

    def plant(module, args, out):
        out[:, -1, reply[min(len(calls), len(reply) - 1)]] += 100.0
        calls.append(1)
        return out

    hook = lm.model.lm_head.register_forward_hook(plant)
    try:
        s = capture_attention(lm, scene(), QUESTION, max_new_tokens=len(reply), vision_encoder=False)
    finally:
        hook.remove()
    assert s.generated_ids.tolist() == reply[: len(s.generated_ids)]
    assert s.attrs["generated_text"] == answer
    assert answer_token_id(lm, s.attrs["generated_text"]) == s.generated_ids[0]


def test_answer_token_rejects_empty(loaded):
    with pytest.raises(ValueError, match="non-empty"):
        answer_token_id(loaded("llava"), " ")


def test_answer_logprob_is_the_log_softmax_of_the_last_logits(loaded):
    lm = loaded("qwen2_5_vl")
    token = answer_token_id(lm, "yes")
    inputs = model_inputs(lm, scene(), QUESTION)
    want = torch.log_softmax(logits(lm.model, inputs)[-1].double(), -1)[token].item()
    assert answer_logprob(lm, scene(), QUESTION, token) == pytest.approx(want, abs=1e-5)
    ablation = HeadAblation({1: (0,)}, "zero")
    with ablating(ablation):
        want_ablated = torch.log_softmax(logits(lm.model, inputs)[-1].double(), -1)[token].item()
    assert answer_logprob(lm, scene(), QUESTION, token, ablation) == pytest.approx(want_ablated, abs=1e-5)
    assert abs(want_ablated - want) > 1e-4


# ---------------------------------------------------------------------------------- causal table
@pytest.fixture(scope="module")
def causal_setup(loaded):
    lm = loaded("llava")
    token = answer_token_id(lm, "yes")
    items = [(scene(x, c), QUESTION, token) for x, c in [(5, (200, 40, 40)), (20, (40, 200, 40)), (30, (40, 40, 200))]]
    n_layers, n_heads, _ = sizes(lm)
    ranked = [(layer, head) for layer in reversed(range(n_layers)) for head in range(n_heads)]
    return lm, items, ranked


def test_causal_table_against_direct_computation(causal_setup):
    lm, items, ranked = causal_setup
    total = len(ranked)
    ks = [0, 1, 3, total]
    kw = dict(ks=ks, n_random=6, seed=11, mode="zero", draw="ranked")
    summary, draws, singles = causal_table(lm, items, ranked, **kw)
    again, draws_again, singles_again = causal_table(lm, items, ranked, **kw)
    assert summary.equals(again) and draws.equals(draws_again) and singles.equals(singles_again)
    assert summary["k"].tolist() == ks and len(draws) == len(ks) * 6
    assert (summary["n_items"] == len(items)).all() and (summary["mode"] == "zero").all()

    base = np.array([answer_logprob(lm, im, q, t) for im, q, t in items])
    for k in (1, 3, total):
        ablation = HeadAblation.from_pairs(ranked[:k], "zero")
        want = np.mean([answer_logprob(lm, im, q, t, ablation) for im, q, t in items] - base)
        row = summary[summary["k"] == k].iloc[0]
        assert row["delta_logprob"] == pytest.approx(want, abs=1e-9)
        assert row["heads"] == ";".join(f"{layer}.{head}" for layer, head in ranked[:k])
    for k in ks:
        row = summary[summary["k"] == k].iloc[0]
        d = draws[draws["k"] == k]
        assert d["draw"].tolist() == list(range(6))
        null = d["delta_logprob"].to_numpy()
        assert row["percentile"] == 100.0 * (np.sum(null < row["delta_logprob"])
                                             + 0.5 * np.sum(null == row["delta_logprob"])) / 6
        assert row["random_mean"] == pytest.approx(d["delta_logprob"].mean())
        assert row["random_q05"] == pytest.approx(np.quantile(d["delta_logprob"], 0.05))
        assert row["random_q95"] == pytest.approx(np.quantile(d["delta_logprob"], 0.95))
        for label in d["heads"]:
            heads = [tuple(map(int, p.split("."))) for p in label.split(";")] if label else []
            assert len(set(heads)) == len(heads) == k and set(heads) <= set(ranked)
    # one random set, recomputed directly
    one = draws[draws["k"] == 3].iloc[2]
    pairs = [tuple(map(int, p.split("."))) for p in one["heads"].split(";")]
    ablation = HeadAblation.from_pairs(pairs, "zero")
    want = np.mean([answer_logprob(lm, im, q, t, ablation) for im, q, t in items] - base)
    assert one["delta_logprob"] == pytest.approx(want, abs=1e-9)
    # no head: exactly 0; every head of every layer: a change, the same for the random sets (all heads)
    none, every = summary.iloc[0], summary.iloc[-1]
    assert none["delta_logprob"] == 0 and (draws[draws["k"] == 0]["delta_logprob"] == 0).all()
    assert abs(every["delta_logprob"]) > 1e-3
    # every draw is the top set itself: all ties, the middle of the null
    assert every["percentile"] == 50 and none["percentile"] == 50
    # the single-head effects: the first max(ks) ranked heads, each ablated alone
    assert singles["rank"].tolist() == list(range(1, total + 1))
    assert list(zip(singles["layer"], singles["head"], strict=True)) == ranked
    for r in (0, 5):
        ablation = HeadAblation.from_pairs([ranked[r]], "zero")
        want = np.mean([answer_logprob(lm, im, q, t, ablation) for im, q, t in items] - base)
        assert singles["delta_logprob"].iloc[r] == pytest.approx(want, abs=1e-9)
    assert singles["delta_logprob"].iloc[0] == summary[summary["k"] == 1]["delta_logprob"].iloc[0]
    assert np.allclose(draws[draws["k"] == total]["delta_logprob"], every["delta_logprob"], atol=1e-12)


def test_causal_table_seed_and_mean_mode(causal_setup):
    lm, items, ranked = causal_setup
    s1, d1, _ = causal_table(lm, items[:1], ranked, ks=[2], n_random=8, seed=1, mode="mean", draw="ranked")
    s2, d2, _ = causal_table(lm, items[:1], ranked, ks=[2], n_random=8, seed=2, mode="mean", draw="ranked")
    assert d1["heads"].tolist() != d2["heads"].tolist()
    assert s1["delta_logprob"].iloc[0] == s2["delta_logprob"].iloc[0]
    ablation = HeadAblation.from_pairs(ranked[:2], "mean")
    im, q, t = items[0]
    want = answer_logprob(lm, im, q, t, ablation) - answer_logprob(lm, im, q, t)
    assert s1["delta_logprob"].iloc[0] == pytest.approx(want, abs=1e-9) and want != 0
    s0, d0, _ = causal_table(lm, items[:1], ranked, ks=[1], n_random=0, seed=0, mode="zero", draw="ranked")
    assert d0.empty and np.isnan(s0["percentile"].iloc[0])


@pytest.mark.parametrize("change, message", [
    (dict(ks=[9]), "k must be an integer ≥ 0 and < 9"),
    (dict(ks=[]), "ks must be a non-empty"),
    (dict(ranked=[]), "ranked_heads is empty"),
    (dict(ranked=[(0, 1), (0, 1)]), "more than once"),
    (dict(ranked=[(2, 0)]), "ranked layer must be an integer ≥ 0 and < 2"),
    (dict(ranked=[(0, 4)]), "ranked head must be an integer ≥ 0 and < 4"),
    (dict(ranked=[(0, 1)], ks=[2]), "k = 2 exceeds the 1 ranked heads"),
    (dict(mode="noise"), "mode must be one of"),
    (dict(n_random=-1), "n_random"),
    (dict(items=[]), "items must be a non-empty"),
    (dict(items="bad"), "items must be a non-empty"),
    (dict(token=-3), "answer token id of item 0"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(draw="uniform"), "draw must be one of ranked, layer_matched, all"),
])
def test_causal_table_bad_arguments(causal_setup, change, message):
    lm, items, ranked = causal_setup
    kw = dict(ks=[1], n_random=2, seed=0, mode="zero", draw="ranked")
    kw.update({k: v for k, v in change.items() if k in kw})
    items = change.get("items", items)
    if "token" in change:
        items = [(items[0][0], items[0][1], change["token"])]
    with pytest.raises(ValueError, match=message):
        causal_table(lm, items, change.get("ranked", ranked), **kw)


# ------------------------------------------------------------------------- the null of the check
def test_random_sets_come_from_the_heads_the_ranking_could_choose():
    ranked = [(1, 2), (0, 3), (1, 0), (0, 1), (1, 3)]  # heads (0, 0), (0, 2), (1, 1) have no rank
    sets = random_sets(ranked, [1, 2, 3], n_random=300, draw="ranked", n_layers=2, n_heads=4, seed=0)
    seen = {h for k in sets for s in sets[k] for h in s}
    assert seen == set(ranked)
    assert all(len(s) == len(set(s)) == k for k in sets for s in sets[k])
    # layer-matched: the top-k's layer multiset, other heads of those layers
    sets = random_sets(ranked, [1, 2, 3], n_random=300, draw="layer_matched", n_layers=2, n_heads=4, seed=0)
    for k in (1, 2, 3):
        want = sorted(layer for layer, _ in ranked[:k])
        assert all(sorted(layer for layer, _ in s) == want for s in sets[k])
    assert {h for s in sets[1] for h in s} == {(1, 2), (1, 0), (1, 3)}
    # all heads: the unranked ones too
    sets = random_sets(ranked, [1], n_random=300, draw="all", n_layers=2, n_heads=4, seed=0)
    assert {h for s in sets[1] for h in s} == {(layer, head) for layer in range(2) for head in range(4)}


def test_percentile_counts_ties_half():
    assert percentile(-1.0, np.array([-2.0, -1.0, 0.0, 0.0])) == 100 * (1 + 0.5) / 4
    assert np.isnan(percentile(0.0, np.array([])))


def _planted(lm, carrier: tuple[int, int] | None):
    """A copy of ``lm`` whose attention output is head ``carrier``'s alone (the ``o_proj`` input
    columns of every other head zeroed in every layer); None: every head of a layer a copy of head 0
    (its query, key and value rows and ``o_proj`` columns), so no head of a layer is special."""
    planted = copy.copy(lm)
    planted.model = copy.deepcopy(lm.model)
    n_layers, n_heads, dim = sizes(planted)
    with torch.no_grad():
        for layer, block in enumerate(layers(planted)):
            attn = block.self_attn
            for head in range(n_heads):
                cols = slice(head * dim, (head + 1) * dim)
                if carrier is None:
                    attn.o_proj.weight[:, cols] = attn.o_proj.weight[:, :dim]
                    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                        if cols.stop <= proj.weight.shape[0]:  # k, v: the key/value heads
                            proj.weight[cols] = proj.weight[:dim]
                            if proj.bias is not None:
                                proj.bias[cols] = proj.bias[:dim]
                elif (layer, head) != carrier:
                    attn.o_proj.weight[:, cols] = 0
    return planted


def _answer_it_carries(lm, carrier, image) -> int:
    """The token whose log-probability falls most when ``carrier`` is ablated: the answer it carries."""
    inputs = model_inputs(lm, image, QUESTION)
    base = torch.log_softmax(logits(lm.model, inputs)[-1].double(), -1)
    with ablating(HeadAblation.from_pairs([carrier], "zero")):
        cut = torch.log_softmax(logits(lm.model, inputs)[-1].double(), -1)
    return int(torch.argmin(cut - base))


@pytest.fixture(scope="module")
def many_heads(tmp_path_factory):
    """A tiny LLaVA with 2 × 16 query heads: a null of one head in 32 hits the carrier in ~3 % of draws."""
    from vlmattn.engine.inference import load_model
    from vlmattn.models import toy

    spec = toy.ToySpec(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2,
                       text_hidden=64, text_layers=2, text_heads=16, text_kv_heads=4)
    out = tmp_path_factory.mktemp("many_heads")
    toy.save(*toy.build_toy(spec), out)
    return load_model("many_heads", "llava", str(out))


def test_a_planted_head_is_found_and_a_null_model_is_not(many_heads):
    lm = many_heads
    n_layers, n_heads, _ = sizes(lm)
    carrier = (1, 5)
    planted = _planted(lm, carrier)
    images = [scene(x, c) for x, c in [(5, (200, 40, 40)), (20, (40, 200, 40))]]
    token = _answer_it_carries(planted, carrier, images[0])
    items = [(im, QUESTION, token) for im in images]
    others = [(layer, head) for layer in range(n_layers) for head in range(n_heads) if (layer, head) != carrier]
    summary, draws, singles = causal_table(planted, items, [carrier] + others, ks=[1], n_random=200, seed=0,
                                           mode="zero", draw="ranked")
    row = summary.iloc[0]
    assert row["delta_logprob"] < -1e-3
    # every other head's output is already 0: ablating it changes nothing
    assert (singles["delta_logprob"].iloc[1:] == 0).all() if len(singles) > 1 else True
    assert row["percentile"] < 5  # beyond the null's 5th percentile: the ranked top head is the carrier
    assert (draws["delta_logprob"] < row["delta_logprob"]).sum() == 0

    # the null model: the heads of a layer are copies, so the top head is any head of its layer
    null = _planted(lm, None)
    token = int(torch.argmax(logits(null.model, model_inputs(null, images[0], QUESTION))[-1]))
    items = [(im, QUESTION, token) for im in images]
    ranked = [(0, h) for h in range(n_heads)]  # one layer's heads: every draw is a copy of the top head
    summary, draws, _ = causal_table(null, items, ranked, ks=[1], n_random=200, seed=0, mode="zero",
                                     draw="layer_matched")
    np.testing.assert_allclose(draws["delta_logprob"], summary["delta_logprob"].iloc[0], atol=1e-9)
    assert 5 <= summary["percentile"].iloc[0] <= 95
