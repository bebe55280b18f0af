"""Bad input is reported as one line naming the model or sample, and leaves no partial HDF5 file."""

from __future__ import annotations

import pytest
from PIL import Image

from vlmattn.config import extraction_settings
from vlmattn.engine.inference import capture_attention, load_model
from vlmattn.errors import ConfigError, InputError, ModelError
from vlmattn.extraction import jobs
from vlmattn.models import toy
from vlmattn.workflow import load_config

SETTINGS = extraction_settings({"max_new_tokens": 2, "prefill_rows": "last", "attention_dtype": "float16",
                                "vision_encoder": {"enabled": True, "full": False, "rollout": True}})


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def test_unsupported_family_in_config():
    with pytest.raises(ConfigError) as e:
        load_config({"questions": {"q": {"text": "?"}}, "models": {"m": {"family": "idefics", "path": "x"}}})
    assert "models.m.family" in one_line(e)


def test_checkpoint_of_an_unsupported_family(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 vocab_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as e:
        load_model("textonly", "llava", str(tmp_path))
    msg = one_line(e)
    assert "'textonly'" in msg and "type 'llama'" in msg and "supported families" in msg


def test_family_mismatch_names_the_right_family(checkpoint):
    with pytest.raises(ModelError) as e:
        load_model("m", "qwen2_5_vl", str(checkpoint("qwen3_vl")))
    assert "use family 'qwen3_vl'" in one_line(e)


def test_missing_checkpoint():
    with pytest.raises(ModelError) as e:
        load_model("gone", "llava", "/nonexistent/checkpoint")
    assert "'gone'" in one_line(e)


def test_attention_that_cannot_be_wrapped_at_load(checkpoint, monkeypatch):
    import transformers

    def refuse(self, *a, **k):
        raise ValueError("custom attention code\nwith a long traceback")

    monkeypatch.setattr(transformers.PreTrainedModel, "set_attn_implementation", refuse)
    with pytest.raises(ModelError) as e:
        load_model("opaque", "llava", str(checkpoint("llava")))
    assert "'opaque'" in one_line(e) and "cannot be instrumented" in str(e.value)


def test_attention_that_bypasses_the_interface(checkpoint):
    """A model whose attention never reaches the registered function (here: switched back to
    eager after loading) is refused after generation instead of yielding empty rows."""
    lm = load_model("bypass", "qwen2_vl", str(checkpoint("qwen2_vl")))
    lm.model.set_attn_implementation({"text_config": "eager"})
    with pytest.raises(ModelError) as e:
        capture_attention(lm, Image.new("RGB", (64, 64)), "What shape?", max_new_tokens=2, vision_encoder=False)
    assert "'bypass'" in one_line(e) and "0 of 2" in str(e.value)


def test_image_the_processor_rejects(loaded):
    lm = loaded("qwen2_vl")
    with pytest.raises(InputError) as e:
        capture_attention(lm, Image.new("RGB", (3000, 14)), "What shape?", max_new_tokens=1)  # aspect ratio > 200
    assert "'tiny_qwen2_vl'" in one_line(e) and "processor rejected" in str(e.value)


def test_prompt_longer_than_the_context(tmp_path):
    spec = toy.ToySpec(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2,
                       text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=1, max_positions=20)
    toy.save(*toy.build_toy(spec), tmp_path)
    lm = load_model("short", "llava", str(tmp_path))
    with pytest.raises(InputError) as e:
        capture_attention(lm, Image.new("RGB", (32, 32)), "What shape is in the image?", max_new_tokens=4)
    assert "'short'" in one_line(e) and "exceeds the context of 20" in str(e.value)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("bad", ["unreadable", "rejected"])
def test_shard_with_a_bad_sample_leaves_no_output(checkpoint, tmp_path, bad, batch):
    model = {"id": "m", "family": "qwen2_vl", "path": str(checkpoint("qwen2_vl"))}
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 48), "red").save(good)
    wrong = tmp_path / "bad.png"
    if bad == "unreadable":
        wrong.write_bytes(b"not an image")
    else:
        Image.new("RGB", (3000, 14)).save(wrong)
    samples = [
        {"image_id": i, "question_id": "q", "question": "What shape?", "image": str(p), "annotation": None,
         "objects": []}
        for i, p in (("good", good), ("bad", wrong))
    ]
    out, index = tmp_path / "out", tmp_path / "index.csv"
    with pytest.raises(SystemExit) as e:
        jobs.extract_shard(model, samples, {**SETTINGS, "generation_batch": batch}, 0, str(out), str(index),
                           str(tmp_path / "cache"))
    msg = str(e.value.code)
    assert "\n" not in msg and "sample m/bad__q" in msg
    assert not out.exists() or not any(out.iterdir())  # no HDF5, no temporary file
    assert not index.exists()
    assert not list((tmp_path / "cache").glob(".*.tmp"))
