"""The learned visual-token pruner (:mod:`vlmattn.pruning.learned`) on a tiny 3-layer LLaVA checkpoint.

References: transformers' eager attention (``output_attentions=True``) for the attention the pruner
reads; the unpruned model's logits and plain greedy ``generate`` for a 100 % budget; the dropped-token
generation of :func:`vlmattn.engine.pruned.generate_pruned` for the hard-masked forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

from tests.conftest import build_checkpoint
from vlmattn.engine.inference import load_model, model_inputs
from vlmattn.engine.pruned import generate_pruned
from vlmattn.models import shapes_task as task
from vlmattn.models.train import answer_losses, encode
from vlmattn.pruning.learned import (
    LearnedPruner,
    PrunerSession,
    PrunerSpec,
    VisionPrunerHead,
    evaluation_session,
    load_pruner,
    prompt_masks,
    scale_residual,
)
from vlmattn.pruning.train_pruner import PrunerTraining, train_pruner

ATOL = 1e-5


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("pruner") / "model", text_layers=3, text_heads=4,
                            text_kv_heads=2)


@pytest.fixture(scope="module")
def lm(path):
    lm = load_model("tiny3", "llava", str(path))
    for p in lm.model.parameters():
        p.requires_grad_(False)
    return lm


@pytest.fixture(scope="module")
def batch(lm):
    """Three shapes-task prompts of different lengths (right padding) with their answers appended."""
    rng = np.random.default_rng(5)
    examples = [task.sample_example(rng, 64, q) for q in ("shape", "count", "position")]
    enc = encode(lm.processor, examples)
    labels = enc.pop("labels")
    masks = prompt_masks(enc["input_ids"], enc["attention_mask"], lm.model.config.image_token_id,
                         (labels != -100).int().argmax(1))
    return enc, labels, masks


def spec(lm, layers=(1,), **kw):
    torch.manual_seed(0)
    return PrunerSpec(layers=layers, hidden_size=lm.model.config.text_config.hidden_size, dim=16, n_heads=2, **kw)


def test_prompt_masks_leave_out_vision_padding_and_answer(lm, batch):
    enc, labels, (vision, text_rows, question) = batch
    ids, att = enc["input_ids"], enc["attention_mask"].bool()
    assert (ids[:, vision] == lm.model.config.image_token_id).all()
    assert len(set(att.sum(1).tolist())) > 1  # the prompts differ in length
    assert not (text_rows & (labels != -100)).any() and not (text_rows & ~att).any()
    assert not text_rows[:, vision].any() and (question <= text_rows).all()
    assert question.any(1).all() and not question[:, : int(vision[-1]) + 1].any()


def test_attention_passed_to_the_pruner_equals_eager(lm, path, batch):
    """a[b, v] = mean over heads and the prompt's text rows of layer K − 1's eager attention on vision key v."""
    enc, _, (vision, text_rows, question) = batch
    for k in (1, 2):
        pruner = LearnedPruner(spec(lm, layers=(k,), use_attn_residual=True))
        with PrunerSession(lm.model, pruner, vision, text_rows, question, mode="budget",
                           budgets={k: len(vision)}) as s, torch.no_grad():
            lm.model(**enc, use_cache=False)
        eager = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
        with torch.no_grad():
            att = eager(**enc, use_cache=False, output_attentions=True).attentions[k - 1]  # [B, H, N, N]
        for b in range(len(att)):
            rows = att[b][:, text_rows[b]][..., vision]  # [H, T_b, V]
            np.testing.assert_allclose(s.attention[k][b].numpy(), rows.mean((0, 1)).numpy(), atol=ATOL, rtol=0)


def test_gradients_reach_the_pruner_and_a_learnable_weight(lm, batch):
    enc, labels, masks = batch
    for learnable in (True, False):
        pruner = LearnedPruner(spec(lm, use_attn_residual=True, learnable_attn_weight=learnable)).train()
        with PrunerSession(lm.model, pruner, *masks, mode="train", generator=torch.Generator().manual_seed(1)) as s:
            out = lm.model(**enc, use_cache=False)
        loss = answer_losses(out.logits, labels).mean() + (s.soft[1].mean(1) - 0.3).pow(2).mean()
        loss.backward()
        head = pruner.heads["1"]
        for name, p in head.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert isinstance(head.attn_residual_weight, torch.nn.Parameter) == learnable
        assert not any(p.grad is not None for p in lm.model.parameters())


def test_without_the_residual_the_attention_is_not_read():
    torch.manual_seed(0)
    vision, emb = torch.randn(2, 9, 16), torch.randn(2, 5, 16)
    question = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    attn = [torch.rand(2, 9).softmax(-1), torch.rand(2, 9).softmax(-1)]
    off = VisionPrunerHead(16, dim=8, n_heads=2, use_attn_residual=False)
    base = off(vision, emb, question)
    for a in attn:
        torch.testing.assert_close(off(vision, emb, question, a), base, rtol=0, atol=0)
    on = VisionPrunerHead(16, dim=8, n_heads=2, use_attn_residual=True, attn_residual_weight=1.0)
    on.load_state_dict(off.state_dict())
    assert not torch.allclose(on(vision, emb, question, attn[0]), on(vision, emb, question, attn[1]))
    with pytest.raises(ValueError, match="no attention"):
        on(vision, emb, question)


def test_residual_scales():
    a = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(scale_residual(a, "raw"), a)
    z = scale_residual(a[:1], "standardize")
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std(unbiased=False)) - 1) < 1e-5
    torch.testing.assert_close(scale_residual(a[1:], "log"), torch.full((1, 4), float(np.log(1 + 1e-6))))
    torch.testing.assert_close(scale_residual(a[:1], "log"), torch.log(4 * a[:1] + 1e-6))


@pytest.mark.parametrize("layers", [(1,), (1, 2)])
def test_a_full_budget_reproduces_the_unpruned_logits(lm, batch, layers):
    enc, _, (vision, text_rows, question) = batch
    pruner = LearnedPruner(spec(lm, layers=layers, use_attn_residual=True))
    with torch.no_grad():
        plain = lm.model(**enc, use_cache=False).logits
        with PrunerSession(lm.model, pruner, vision, text_rows, question, mode="budget",
                           budgets=dict.fromkeys(layers, len(vision))) as s:
            full = lm.model(**enc, use_cache=False).logits
    assert all(s.kept(k).all() for k in layers)
    torch.testing.assert_close(full, plain, rtol=0, atol=ATOL)


def test_a_full_budget_generates_as_plain_generate(lm):
    image = task.sample_example(np.random.default_rng(2), 64, "colour").image
    question = task.question_text("colour")
    inputs = model_inputs(lm, image, question)
    pruner = LearnedPruner(spec(lm, use_attn_residual=True)).eval()
    v = int((inputs["input_ids"] == lm.model.config.image_token_id).sum())
    with torch.no_grad():
        plain = lm.model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True,
                                  output_logits=True)
    with evaluation_session(lm, pruner, inputs, v) as s:
        res = generate_pruned(lm, image, question, keep=s.decide, layer=1, mode="drop", positions="keep",
                              max_new_tokens=3)
    n = inputs["input_ids"].shape[1]
    np.testing.assert_array_equal(res.generated_ids, plain.sequences[0, n:].numpy())
    np.testing.assert_array_equal(res.logits, torch.cat([x[:1] for x in plain.logits]).numpy())
    assert len(res.dropped_positions) == 0


def test_hard_masks_equal_dropping_the_tokens(lm):
    """The ``budget`` forward pass (kept tokens as key biases) and a generation that drops the other tokens
    from layer K on keep the same tokens and give the same first logits; with two layers, the second keeps
    its budget from the first's tokens."""
    image = task.sample_example(np.random.default_rng(3), 64, "shape").image
    question = task.question_text("shape")
    inputs = model_inputs(lm, image, question)
    vision, text_rows, q = prompt_masks(inputs["input_ids"], inputs["attention_mask"], lm.model.config.image_token_id)
    v = len(vision)
    pruner = LearnedPruner(spec(lm, use_attn_residual=True, residual_scale="log")).eval()
    with torch.no_grad(), PrunerSession(lm.model, pruner, vision, text_rows, q, mode="budget",
                                        budgets={1: v // 3}) as s:
        masked = lm.model(**inputs, use_cache=False).logits[0, -1]
    kept = torch.nonzero(s.kept(1)[0]).flatten().numpy()
    assert len(kept) == v // 3 and len(kept) < v
    with evaluation_session(lm, pruner, inputs, v // 3) as d:
        res = generate_pruned(lm, image, question, keep=d.decide, layer=1, mode="drop", positions="keep",
                              max_new_tokens=1)
    np.testing.assert_array_equal(np.setdiff1d(vision.numpy(), res.dropped_positions), vision.numpy()[kept])
    np.testing.assert_allclose(res.first_logits, masked.numpy(), atol=ATOL, rtol=0)

    two = LearnedPruner(spec(lm, layers=(1, 2), use_attn_residual=True)).eval()
    with torch.no_grad(), PrunerSession(lm.model, two, vision, text_rows, q, mode="budget",
                                        budgets={1: v // 2, 2: v // 4}) as s:
        lm.model(**inputs, use_cache=False)
    first, second = s.kept(1)[0], s.kept(2)[0]
    assert int(first.sum()) == v // 2 and int(second.sum()) == v // 4 and bool((second <= first).all())


def test_training_is_deterministic_and_saved_pruners_reload(lm, tmp_path):
    training = PrunerTraining(steps=3, batch_size=4, log_every=2, render_size=64)
    s = spec(lm, use_attn_residual=True, learnable_attn_weight=True)
    a, report = train_pruner(lm.model, lm.processor, s, training, show_progress=False)
    b, _ = train_pruner(lm.model, lm.processor, s, training, show_progress=False)
    assert list(report["step"]) == [2, 3] and report["keep_share"].between(0, 1).all()
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert a.residual_weights()[1] != 0.5  # the learnable weight moved
    a.save(tmp_path / "p.safetensors", {"variant": "x"})
    c, meta = load_pruner(tmp_path / "p.safetensors")
    assert meta == {"variant": "x"} and c.spec == a.spec
    for (name, x), (_, y) in zip(a.state_dict().items(), c.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_bad_settings_are_refused(lm, batch):
    with pytest.raises(ValueError, match="layers"):
        PrunerSpec(layers=(0,), hidden_size=8)
    with pytest.raises(ValueError, match="residual_scale"):
        PrunerSpec(layers=(1,), hidden_size=8, residual_scale="sqrt")
    _, _, masks = batch
    pruner = LearnedPruner(spec(lm, layers=(3,)))
    with pytest.raises(ValueError, match="below the model's 3 decoder layers"):
        PrunerSession(lm.model, pruner, *masks, mode="train")
    with pytest.raises(ValueError, match="budgets"):
        PrunerSession(lm.model, LearnedPruner(spec(lm)), *masks, mode="budget")
