"""``extraction.prefill_layers``: prefill rows stored at chosen decoder layers only.

The stored rows equal the full capture's rows at those layers bit for bit and transformers' eager
``output_attentions=True`` rows (float32, ≤ 1e-5, as in test_exactness); the decode rows stay complete
at every layer; the store round-trips the layers, reads files written without them as every layer, and
:func:`prefill_at` names a missing layer.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText

from vlmattn import tables
from vlmattn.config import extraction_settings
from vlmattn.engine.inference import capture_attention, load_model, prefill_positions
from vlmattn.errors import ConfigError, InputError
from vlmattn.extraction import jobs as extraction_jobs
from vlmattn.store import AttentionSample, prefill_at, read_sample, write_sample
from vlmattn.workflow import load_config

from .conftest import FAMILIES, build_checkpoint

STEPS = 3
QUESTION = "What shape is in the image?"


def scene():
    im = Image.new("RGB", (150, 90), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([20, 10, 70, 60], fill=(40, 180, 60))
    return im


@torch.no_grad()
def eager_reference(path, lm):
    """(prompt length, eager generate output with attentions) of the same checkpoint."""
    inputs = lm.adapter.build_inputs(lm.processor, scene(), QUESTION)
    eager = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
    ref = eager.generate(**inputs, max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True,
                         output_attentions=True)
    return inputs["input_ids"].shape[1], ref


def check_against_eager(s, n, ref):
    """Stored prefill rows at ``s.prefill_layers`` and decode rows at every layer against eager attention."""
    pos = prefill_positions("all_text", n, s.image_positions)
    np.testing.assert_array_equal(s.prefill_positions, pos)
    for i, layer in enumerate(s.prefill_layers):
        want = ref.attentions[0][layer][0][:, pos]
        np.testing.assert_allclose(s.prefill[i], want.numpy(), atol=1e-5, rtol=0)
    assert s.decode.shape[1] == len(ref.attentions[0])
    for t in range(s.n_steps):
        for layer in range(s.decode.shape[1]):
            a = ref.attentions[t][layer][0]
            want = a[:, -1] if t == 0 else a[:, 0]
            first = n + t - want.shape[-1]  # a sliding-window layer's decode call sees its last keys only
            np.testing.assert_allclose(s.decode[t, layer, :, first : n + t], want.numpy(), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory):
    """A tiny LLaVA checkpoint with 3 decoder layers (GQA) and its loaded model."""
    path = build_checkpoint(tmp_path_factory.mktemp("three") / "model", text_layers=3, text_heads=4, text_kv_heads=2)
    return path, load_model("three", "llava", str(path))


@pytest.mark.parametrize("family", FAMILIES)
def test_selected_layer_equals_full_capture_and_eager(checkpoint, loaded, family):
    lm = loaded(family)
    assert lm.model.config.get_text_config().num_hidden_layers == 2
    full = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all_text")
    part = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all_text", prefill_layers=[1])
    assert full.prefill_layers.tolist() == [0, 1] and part.prefill_layers.tolist() == [1]
    assert part.prefill_layers.dtype == np.int64
    assert part.prefill.shape == (1, *full.prefill.shape[1:])
    np.testing.assert_array_equal(part.prefill[0], full.prefill[1])
    np.testing.assert_array_equal(part.prefill_positions, full.prefill_positions)
    np.testing.assert_array_equal(part.generated_ids, full.generated_ids)
    np.testing.assert_array_equal(part.decode, full.decode)  # decode rows of layer 0 as well
    n, ref = eager_reference(checkpoint(family), lm)
    assert part.generated_ids.tolist() == ref.sequences[0, n:].tolist()
    check_against_eager(part, n, ref)
    s_part, s_full = json.loads(part.attrs["settings_json"]), json.loads(full.attrs["settings_json"])
    assert s_part.pop("prefill_layers") == [1] and s_full.pop("prefill_layers") == "all" and s_part == s_full
    assert part.attrs["settings_hash"] != full.attrs["settings_hash"]


def test_layers_are_sorted_and_the_skipped_layer_keeps_its_decode_rows(three_layers):
    path, lm = three_layers
    full = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all_text")
    part = capture_attention(lm, scene(), QUESTION, max_new_tokens=STEPS, prefill_rows="all_text",
                             prefill_layers=[2, 0])
    assert part.prefill_layers.tolist() == [0, 2] and part.prefill.shape[0] == 2
    np.testing.assert_array_equal(part.prefill, full.prefill[[0, 2]])
    np.testing.assert_array_equal(part.decode, full.decode)
    assert json.loads(part.attrs["settings_json"])["prefill_layers"] == [0, 2]
    n, ref = eager_reference(path, lm)
    check_against_eager(part, n, ref)


def test_default_stores_every_layer_as_before(loaded):
    lm = loaded("llava")
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=2, prefill_rows="text_after_image")
    listed = capture_attention(lm, scene(), QUESTION, max_new_tokens=2, prefill_rows="text_after_image",
                               prefill_layers=[0, 1])
    assert s.prefill_layers.tolist() == [0, 1] and s.prefill.shape[0] == 2
    np.testing.assert_array_equal(listed.prefill, s.prefill)
    np.testing.assert_array_equal(listed.decode, s.decode)


def test_round_trip_and_prefill_at(loaded, tmp_path):
    lm = loaded("llava")
    meta = {"image_id": "ball", "question_id": "shape"}
    full = capture_attention(lm, scene(), QUESTION, max_new_tokens=2, prefill_rows="all_text", meta=meta)
    part = capture_attention(lm, scene(), QUESTION, max_new_tokens=2, prefill_rows="all_text", prefill_layers=[1],
                             meta=meta)
    write_sample(tmp_path / "part.h5", part, attention_dtype="float32")
    with h5py.File(tmp_path / "part.h5") as f:
        assert f["attention/prefill_layers"].dtype == np.int64 and f["attention/prefill_layers"][()].tolist() == [1]
        assert f["attention/prefill"].shape[0] == 1
    back = read_sample(tmp_path / "part.h5")
    assert back.prefill_layers.tolist() == [1]
    np.testing.assert_array_equal(back.prefill, part.prefill)
    np.testing.assert_array_equal(back.decode, part.decode)
    np.testing.assert_array_equal(prefill_at(back, 1), full.prefill[1])
    for layer in (0, 1):
        np.testing.assert_array_equal(prefill_at(full, layer), full.prefill[layer])
    with pytest.raises(ValueError, match=r"^sample ball__shape stores prefill rows at layers \[1\], not layer 0: "
                                         r"add it to extraction\.prefill_layers$"):
        prefill_at(back, 0)
    write_sample(tmp_path / "full.h5", full)
    with h5py.File(tmp_path / "full.h5") as f:
        assert f["attention/prefill_layers"][()].tolist() == [0, 1]


def test_files_without_the_dataset_read_as_every_layer(loaded, tmp_path):
    lm = loaded("llava")
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=2, prefill_rows="last")
    path = tmp_path / "old.h5"
    write_sample(path, s)
    with h5py.File(path, "a") as f:
        del f["attention/prefill_layers"]
    back = read_sample(path)
    assert back.prefill_layers.dtype == np.int64 and back.prefill_layers.tolist() == [0, 1]
    np.testing.assert_array_equal(prefill_at(back, 1), back.prefill[1])
    built = AttentionSample(**{**vars(s), "prefill_layers": None})
    assert built.stored_prefill_layers.tolist() == [0, 1]


def test_reader_refuses_layers_that_do_not_match_the_prefill(loaded, tmp_path):
    lm = loaded("llava")
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=1, prefill_layers=[1])
    for bad in ([0, 1], [2], [-1]):
        path = tmp_path / "bad.h5"
        write_sample(path, s)
        with h5py.File(path, "a") as f:
            del f["attention/prefill_layers"]
            f["attention/prefill_layers"] = np.array(bad, np.int64)
        with pytest.raises(InputError, match=r"attention/prefill_layers .* ascending order within 0 … 1$"):
            read_sample(path)


def test_non_finite_prefill_is_located_at_its_decoder_layer(loaded, tmp_path):
    lm = loaded("llava")
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=1, prefill_layers=[1])
    s.prefill[0, 2, 0, 3] = np.nan
    write_sample(tmp_path / "nan.h5", s)
    with pytest.raises(InputError, match=r"attention/prefill holds 1 NaN .*\(first at layer 1, head 2, row 0\)$"):
        read_sample(tmp_path / "nan.h5")


@pytest.mark.parametrize("layers, why", [([2], "got 2"), ([-1], "got -1"), ([1, 1], "got layer 1 more than once"),
                                         ([], "got an empty list"), ([0.5], "got non-integer 0.5"),
                                         ([True], "got non-integer True")])
def test_bad_layers_are_one_line_errors(loaded, layers, why):
    lm = loaded("llava")
    with pytest.raises(InputError) as e:
        capture_attention(lm, scene(), QUESTION, max_new_tokens=1, prefill_layers=layers)
    msg = str(e.value)
    assert "\n" not in msg and "extraction.prefill_layers" in msg and "the model has 2" in msg and msg.endswith(why)
    assert msg.startswith("model 'tiny_llava': ")


MINIMAL = {"questions": {"q": {"text": "Hi?"}}, "models": {"m": {"family": "llava", "path": "x"}}}


def test_config_default_and_errors():
    assert load_config(MINIMAL)["extraction"]["prefill_layers"] == "all"
    assert load_config({**MINIMAL, "extraction": {"prefill_layers": [3, 1]}})["extraction"]["prefill_layers"] == [3, 1]
    for bad in ([-1], [1, 1], [], "some", [1.5]):
        with pytest.raises(ConfigError, match=r"^config extraction\.prefill_layers[.:]") as e:
            load_config({**MINIMAL, "extraction": {"prefill_layers": bad}})
        assert "\n" not in str(e.value)


def test_extraction_job_passes_the_layers_and_keys_the_cache(checkpoint, tmp_path):
    p = tmp_path / "red.png"
    Image.new("RGB", (40, 30), "red").save(p)
    sm = {"image_id": "red", "question_id": "q", "question": "What colour is it?", "image": str(p),
          "annotation": None, "objects": []}
    model = {"id": "m", "family": "llava", "path": str(checkpoint("llava")), "dtype": "float32", "device": "cpu"}
    base = {"max_new_tokens": 1, "prefill_rows": "all_text", "attention_dtype": "float32",
            "vision_encoder": {"enabled": False}}
    runs = {}
    for name, layers in (("all", "all"), ("one", [1])):
        settings = extraction_settings({**base, "prefill_layers": layers})
        out, index = tmp_path / name, tmp_path / f"{name}.csv"
        stats = extraction_jobs.extract_shard(model, [sm], settings, 0, str(out), str(index), str(tmp_path / "cache"))
        assert stats["extracted"] == 1  # a different setting is a different cache entry
        runs[name] = read_sample(out / "red__q.h5")
        key = extraction_jobs.sample_cache_key(model, sm, settings, 0)
        assert tables.read_index(index).loc[0, "cache_key"] == key
    assert runs["all"].prefill_layers.tolist() == [0, 1] and runs["one"].prefill_layers.tolist() == [1]
    np.testing.assert_array_equal(runs["one"].prefill[0], runs["all"].prefill[1])
