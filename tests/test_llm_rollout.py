"""Language-model attention rollout: accumulated rows equal the rollout of eager attention weights, the
option leaves generation unchanged, store round trip, closed forms of the maps, planted contrast.

Reference: the same checkpoint loaded with ``attn_implementation="eager"``, one forward pass without a
cache over the prompt and the generated tokens but the last (``M = N + T − 1``) with
``output_attentions=True``; its ``[H, M, M]`` weights give, in float64,
``R = Π_l (0.5·I + 0.5·mean_h A_l)`` (layer 0 applied first).
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText

from tests.synthetic_attention import make_sample
from vlmattn.contrasts.rollout import COLUMNS, FORMS, rollout_contrast
from vlmattn.engine import capture
from vlmattn.engine.capture import CaptureError, RolloutAccumulator, rolling_out
from vlmattn.engine.inference import capture_attention, load_model
from vlmattn.rollout import encoder_token_importance, full_rollout_map, llm_rollout_map, seed_rollout_map
from vlmattn.store import VisionEncoderAttention, read_sample, write_sample

STEPS = 4
QUESTION = "What shape is in the image?"
STATS = dict(confidence=0.95, n_resamples=9999, seed=0, alpha=0.05, method="bca")


def scene():
    im = Image.new("RGB", (150, 90), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([20, 10, 70, 60], fill=(40, 180, 60))
    return im


def reference_rollout(path, lm, s) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(R [M, M] float64, eager weights [H, M, M] per layer)`` of one eager pass over the M tokens."""
    inputs = lm.adapter.build_inputs(lm.processor, scene(), QUESTION)
    n, m = len(s.input_ids), len(s.input_ids) + s.n_steps - 1
    ids = torch.as_tensor(np.concatenate([s.input_ids, s.generated_ids[:-1]]))[None]
    kw = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "mm_token_type_ids" in inputs:  # generated tokens are text
        kw["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, m - n, dtype=torch.long)], 1)
    eager = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        weights = [a[0].double().numpy() for a in eager(**kw, output_attentions=True, use_cache=False).attentions]
    r = np.eye(m)
    for a in weights:
        r = (0.5 * np.eye(m) + 0.5 * a.mean(axis=0)) @ r
    return r, weights


def check_against_eager(s, r, weights):
    n, m = len(s.input_ids), len(s.input_ids) + s.n_steps - 1
    assert s.rollout_decode.shape == (s.n_steps, m) and s.rollout_decode.dtype == np.float32
    assert s.rollout_prefill.shape == (len(s.prefill_positions), n)
    np.testing.assert_allclose(s.rollout_decode, r[n - 1 :], atol=1e-5, rtol=0)  # zeros past each row included
    np.testing.assert_allclose(s.rollout_prefill, r[s.prefill_positions, :n], atol=1e-5, rtol=0)
    np.testing.assert_allclose(s.rollout_decode.sum(axis=1), 1, atol=1e-5)
    # the extra pass sees what generation saw: its rows at the decode queries are the captured decode rows
    for t in range(s.n_steps):
        for layer, a in enumerate(weights):
            np.testing.assert_allclose(s.decode[t, layer, :, : n + t], a[:, n - 1 + t, : n + t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family,blocks", [("llava", "one"), ("llava", "several"), ("qwen2_vl", "several"),
                                           ("qwen2_5_vl", "several"), ("qwen3_vl", "several")])
def test_rollout_rows_equal_eager_rollout(checkpoint, loaded, monkeypatch, family, blocks):
    if blocks == "several":  # blocks of 3-5 query rows, the last one shorter: the in-place update order matters
        monkeypatch.setattr(capture, "_CPU_ROLLOUT_BLOCK_BYTES", 4 * 4 * 32 * 5)
    lm = loaded(family)
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all", llm_rollout=True)
    assert s.n_steps > 1
    r, weights = reference_rollout(checkpoint(family), lm, s)
    check_against_eager(s, r, weights)


def test_rollout_with_a_sliding_window_layer(checkpoint, tmp_path):
    """Qwen2-VL with layer 1 attending over a 24-key window (shorter than the prompt)."""
    path = tmp_path / "model"
    shutil.copytree(checkpoint("qwen2_vl"), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["text_config"].update(use_sliding_window=True, sliding_window=24, max_window_layers=1)
    cfg["text_config"].pop("layer_types")
    (path / "config.json").write_text(json.dumps(cfg))
    lm = load_model("sliding", "qwen2_vl", str(path))
    assert lm.model.config.get_text_config().layer_types == ["full_attention", "sliding_attention"]
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all", vision_encoder=False,
                          llm_rollout=True)
    r, weights = reference_rollout(path, lm, s)
    assert (weights[1][:, -1, : len(s.input_ids) + s.n_steps - 25] == 0).all()  # the window is in effect
    check_against_eager(s, r, weights)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_option_leaves_generation_and_capture_unchanged(loaded, family):
    lm = loaded(family)
    off = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all_text")
    on = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all_text", llm_rollout=True)
    assert off.rollout_decode is None and off.rollout_prefill is None
    np.testing.assert_array_equal(on.generated_ids, off.generated_ids)
    np.testing.assert_array_equal(on.decode, off.decode)
    np.testing.assert_array_equal(on.prefill, off.prefill)
    np.testing.assert_array_equal(on.vision_encoder.received, off.vision_encoder.received)
    np.testing.assert_array_equal(on.vision_encoder.rollout_received, off.vision_encoder.rollout_received)
    s_on, s_off = json.loads(on.attrs["settings_json"]), json.loads(off.attrs["settings_json"])
    assert s_on.pop("llm_rollout") is True and s_off.pop("llm_rollout") is False and s_on == s_off
    assert on.attrs["settings_hash"] != off.attrs["settings_hash"]


def test_store_round_trip_with_and_without_rollout(loaded, tmp_path):
    lm = loaded("llava")
    on = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="text_after_image",
                           llm_rollout=True)
    write_sample(tmp_path / "on.h5", on)  # attention in float16, the rollout in float32 all the same
    back = read_sample(tmp_path / "on.h5")
    np.testing.assert_array_equal(back.rollout_decode, on.rollout_decode)
    np.testing.assert_array_equal(back.rollout_prefill, on.rollout_prefill)
    with h5py.File(tmp_path / "on.h5") as f:
        assert f["attention/rollout_decode"].dtype == np.float32 and f["attention/rollout_prefill"].dtype == np.float32
    on.rollout_decode = on.rollout_prefill = None  # as written without the option (and by older versions)
    write_sample(tmp_path / "off.h5", on)
    with h5py.File(tmp_path / "off.h5") as f:
        assert "rollout_decode" not in f["attention"] and "rollout_prefill" not in f["attention"]
    back = read_sample(tmp_path / "off.h5")
    assert back.rollout_decode is None and back.rollout_prefill is None


# ------------------------------------------------------------------------------------ accumulator
def uniform_layer(acc, layer, m, heads=2, mask=None):
    """Layer call with q = 0: every row attends uniformly over its causal keys, A[i, j] = 1/(i+1)."""
    q, k = torch.zeros(1, heads, m, 4), torch.randn(1, heads, m, 4)
    acc.update(layer, q, k, mask, 0.5, 1)


def test_accumulator_closed_form_of_uniform_causal_layers(monkeypatch):
    monkeypatch.setattr(capture, "_CPU_ROLLOUT_BLOCK_BYTES", 4 * 2 * 7 * 3)  # 3-row blocks over 7 positions
    m = 7
    a = np.tril(np.ones((m, m))) / np.arange(1, m + 1)[:, None]
    step = 0.5 * np.eye(m) + 0.5 * a
    for n_layers in (1, 2, 3):
        acc = RolloutAccumulator(n_layers, m, "cpu")
        for layer in range(n_layers):
            uniform_layer(acc, layer, m)
        want = np.linalg.matrix_power(step, n_layers)
        np.testing.assert_allclose(acc.rows(np.arange(m)).numpy(), want, atol=1e-7, rtol=0)
    # one layer: the last row is 0.5 on itself plus 0.5/m everywhere
    acc = RolloutAccumulator(1, m, "cpu")
    uniform_layer(acc, 0, m)
    np.testing.assert_allclose(acc.rows([m - 1]).numpy()[0], 0.5 / m + 0.5 * np.eye(m)[m - 1], atol=1e-7)


def test_accumulator_refuses_out_of_order_layers_missing_layers_and_acausal_attention():
    acc = RolloutAccumulator(2, 5, "cpu")
    with pytest.raises(CaptureError, match="layer 1 attended while layer 0"):
        uniform_layer(acc, 1, 5)
    uniform_layer(acc, 0, 5)
    with pytest.raises(CaptureError, match="1 of 2"):
        acc.rows([4])
    with pytest.raises(CaptureError, match="3 queries over 5 keys"):
        acc.update(1, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 5, 4), None, 1.0, 1)
    bidirectional = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    uniform_layer(acc, 1, 5, mask=bidirectional)
    with pytest.raises(CaptureError, match="not causal"):
        acc.rows([4])


def test_rolling_out_silences_the_recorder():
    rec = capture.AttentionRecorder(prefill_positions=torch.tensor([0]))
    acc = RolloutAccumulator(1, 3, "cpu")
    with capture.recording(rec):
        assert capture.active_hooks() == (rec,)
        with rolling_out(acc):
            assert capture.active_hooks() == (acc,)
        assert capture.active_hooks() == (rec,)
    assert capture.active_hooks() == ()


def test_hooks_run_in_order_and_are_removed_when_the_block_ends():
    """Every hook of the block sees every call (observe, attend, edit, after, in that order), and none is
    left active after the block, even when it ends with an error; two replacing hooks are an error."""
    calls = []

    class Probe(capture.AttentionHook):
        def __init__(self, name):
            self.name = name

        def observe(self, call):
            calls.append((self.name, "observe", call.layer))

        def edit(self, call, out):
            calls.append((self.name, "edit", call.layer))
            return out

        def after(self, call):
            calls.append((self.name, "after", call.layer))

    class Module:
        layer_idx, num_key_value_groups, sliding_window = 3, 1, None

    q = torch.randn(1, 2, 4, 8)
    plain, _ = capture.capture_attention_forward(Module(), q, q, q, None)
    with capture.hooks(Probe("a"), Probe("b")):
        out, _ = capture.capture_attention_forward(Module(), q, q, q, None)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    assert calls == [("a", "observe", 3), ("b", "observe", 3), ("a", "edit", 3), ("b", "edit", 3),
                     ("a", "after", 3), ("b", "after", 3)]
    with pytest.raises(RuntimeError, match="boom"), capture.hooks(Probe("c")):
        raise RuntimeError("boom")
    assert capture.active_hooks() == ()
    kept = capture.KeptAttention({})
    with pytest.raises(CaptureError, match="two active hooks replace"), capture.hooks(kept, kept):
        capture.capture_attention_forward(Module(), q, q, q, None)
    with pytest.raises(TypeError, match="AttentionHook"), capture.hooks(lambda *a: None):
        pass


# ------------------------------------------------------------------------------------------- maps
def merged_encoder(r_received, r_cls=None) -> VisionEncoderAttention:
    """Encoder data of an 8×8 patch grid merged 2×2 onto a 4×4 token grid (Qwen-like); last-layer rollout
    rows ``r_received [64]`` (and ``r_cls``), on top of an unrelated first layer."""
    r, c = np.divmod(np.arange(64), 8)
    token = (r // 2) * 4 + c // 2
    first = np.full(64, 1 / 64)
    cls = np.zeros((2, 0)) if r_cls is None else np.stack([first, r_cls])
    return VisionEncoderAttention(
        patch_grid=np.array([[8, 8]]), patch_spans=np.array([[0, 64]]), patch_boxes=np.zeros((64, 4)),
        patch_token=token, received=np.zeros((2, 1, 64)), cls_attention=np.zeros((2, 1, 0)),
        rollout_received=np.stack([first, r_received]), rollout_cls=cls, segment=np.zeros((2, 64), np.int32),
        has_cls=r_cls is not None,
    )


def with_rollout(sample, rows):
    """``sample`` with ``rollout_decode`` rows ``[T, V]`` on its vision tokens and 0.2 of mass on text."""
    n_steps, n_keys = sample.decode.shape[0], sample.decode.shape[-1]
    out = np.zeros((n_steps, n_keys))
    out[:, sample.vision_index] = 0.8 * np.asarray(rows)
    out[:, 0] = 0.2
    sample.rollout_decode = out
    return sample


def test_llm_map_is_the_renormalised_vision_part_of_the_row():
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.ones(16), size=2)
    s = with_rollout(make_sample(rng.dirichlet(np.ones(16), size=(2, 1, 1))), rows)
    np.testing.assert_allclose(llm_rollout_map(s, 1), rows[1], atol=1e-12)
    np.testing.assert_allclose(llm_rollout_map(s, -1), rows[1], atol=1e-12)
    s.rollout_decode[0, s.vision_index] = 0  # no vision mass: undefined
    assert np.isnan(llm_rollout_map(s, 0)).all()
    with pytest.raises(ValueError, match="step must be"):
        llm_rollout_map(s, 2)


def test_encoder_importance_sums_merged_patches_and_picks_its_source():
    rng = np.random.default_rng(1)
    recv, cls = rng.dirichlet(np.ones(64)), rng.dirichlet(np.ones(64))
    s = make_sample(np.full((1, 1, 1, 16), 1 / 16))
    s.vision_encoder = merged_encoder(recv, cls)
    want = np.zeros(16)
    for p in range(64):  # patch (r, c) feeds token (r // 2, c // 2)
        want[(p // 8 // 2) * 4 + (p % 8) // 2] += cls[p]
    np.testing.assert_allclose(encoder_token_importance(s, "cls"), want / want.sum(), atol=1e-12)
    got = encoder_token_importance(s, "received")
    assert got[0] == pytest.approx((recv[[0, 1, 8, 9]]).sum() / recv.sum())
    s.vision_encoder = merged_encoder(recv)  # no CLS: "cls" falls back to the received rollout
    np.testing.assert_allclose(encoder_token_importance(s, "cls"), got, atol=1e-12)


def test_uniform_encoder_importance_leaves_the_llm_maps_unchanged():
    rng = np.random.default_rng(2)
    v = rng.dirichlet(np.ones(16), size=(2, 3, 2))  # [T, L, H, V]
    s = with_rollout(make_sample(v), rng.dirichlet(np.ones(16), size=2))
    s.vision_encoder = merged_encoder(np.full(64, 1 / 64))
    for t in range(2):
        np.testing.assert_allclose(full_rollout_map(s, t, "received"), llm_rollout_map(s, t), atol=1e-12)
        mean = v[t].mean(axis=(0, 1))
        np.testing.assert_allclose(seed_rollout_map(s, t, "received"), mean / mean.sum(), atol=1e-12)


def test_product_maps_with_planted_factors():
    """Rollout row ∝ (1, 2, …, 16) and encoder importance one-hot-ish on two tokens: the product map is
    their renormalised product, in closed form."""
    s = with_rollout(make_sample(np.full((1, 2, 2, 16), 1 / 16)), [np.arange(1, 17) / 136])
    recv = np.zeros(64)
    recv[[0, 1, 8, 9]] = 0.1  # token 0
    recv[[54, 55, 62, 63]] = 0.15  # token 15
    s.vision_encoder = merged_encoder(recv)
    want = np.zeros(16)
    want[0], want[15] = 1 * 0.4, 16 * 0.6
    np.testing.assert_allclose(full_rollout_map(s, 0, "received"), want / want.sum(), atol=1e-12)
    np.testing.assert_allclose(seed_rollout_map(s, 0, "received"), [0.4] + [0] * 14 + [0.6], atol=1e-12)


def test_maps_name_the_missing_data():
    s = make_sample(np.full((1, 1, 1, 16), 1 / 16))
    with pytest.raises(ValueError, match="extraction.llm_rollout"):
        llm_rollout_map(s, 0)
    with pytest.raises(ValueError, match="extraction.vision_encoder.enabled"):
        encoder_token_importance(s, "received")
    s.vision_encoder = merged_encoder(np.full(64, 1 / 64))
    s.vision_encoder.rollout_received = np.zeros((2, 0))
    with pytest.raises(ValueError, match="extraction.vision_encoder.rollout"):
        seed_rollout_map(s, 0, "received")
    with pytest.raises(ValueError, match="source must be"):
        encoder_token_importance(s, "mean")


# --------------------------------------------------------------------------------------- contrast
TOP_LEFT_4x4 = [0, 1, 4, 5]


def planted_pairs(n_pairs=12, seed=3):
    """4×4-token pairs, Dirichlet attention and rollout rows everywhere, uniform encoder importance; in
    A the rollout row also puts half its vision mass evenly on the top-left quadrant."""
    rng = np.random.default_rng(seed)
    tl = np.zeros(16)
    tl[TOP_LEFT_4x4] = 0.25
    a, b = [], []
    for _ in range(n_pairs):
        pair = []
        for planted in (True, False):
            s = make_sample(rng.dirichlet(np.ones(16), size=(1, 2, 2)))
            row = rng.dirichlet(np.ones(16))
            s = with_rollout(s, [0.5 * row + 0.5 * tl if planted else row])
            s.vision_encoder = merged_encoder(np.full(64, 1 / 64))
            pair.append(s)
        a.append(pair[0])
        b.append(pair[1])
    return a, b


def test_contrast_ranks_the_planted_rollout_and_not_the_seed_form():
    a, b = planted_pairs()
    t = rollout_contrast(a, b, "top_left", step=0, source="cls", **STATS)
    assert list(t.columns) == COLUMNS and t["form"].tolist() == list(FORMS)
    assert (t["n_pairs"] == 12).all()
    planted = t.set_index("form").loc[["llm", "llm_x_encoder"]]
    assert planted["significant"].all() and (planted["p_adj"] < 0.01).all() and (planted["ci_low"] > 0).all()
    assert sorted(planted["rank"]) == [1, 2]
    seed = t.set_index("form").loc["seed"]
    assert not seed["significant"] and seed["ci_low"] < 0 < seed["ci_high"]
    # mean ROI mass, computed here from the rows themselves
    want_a = np.mean([s.rollout_decode[0, s.vision_index][TOP_LEFT_4x4].sum() / 0.8 for s in a])
    assert planted.loc["llm", "mean_a"] == pytest.approx(want_a, abs=1e-12)
    assert planted.loc["llm", "mean_a"] > 0.5


def test_contrast_without_rollout_names_the_option_and_runs_the_seed_form():
    a, b = planted_pairs(n_pairs=4)
    for s in a + b:
        s.rollout_decode = None
    with pytest.raises(ValueError, match="extraction.llm_rollout"):
        rollout_contrast(a, b, "top_left", step=0, source="received", **STATS)
    t = rollout_contrast(a, b, "top_left", step=0, source="received", forms=("seed",), **STATS)
    assert t["form"].tolist() == ["seed"] and t["n_pairs"].iloc[0] == 4
    with pytest.raises(ValueError, match="forms must be"):
        rollout_contrast(a, b, "top_left", step=0, source="received", forms=("seed", "nope"), **STATS)
