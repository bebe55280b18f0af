"""LLaVA with ``vision_feature_select_strategy="full"``: the CLIP CLS token is fed to the LLM.

Each image's run of ``<image>`` tokens is then ``[CLS, patch_0, …, patch_{P-1}]``. The CLS token has no
pixel box: ``/vision/spans`` cover the ``P`` patch tokens (grid and boxes as with ``"default"``) and
``/vision/cls_positions`` holds the CLS token's prompt position, just before its span.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vlmattn.engine.adapters.base import token_spans
from vlmattn.engine.inference import capture_attention, load_model
from vlmattn.errors import ModelError
from vlmattn.metrics import METRICS, get_metric
from vlmattn.metrics.options import metric_params
from vlmattn.store import read_sample, write_sample
from vlmattn.workflow import load_config

QUESTION = "What shape is in the image?"


def scene():
    im = Image.new("RGB", (48, 32), (0, 0, 0))
    ImageDraw.Draw(im).rectangle([17, 17, 22, 22], fill=(255, 255, 255))
    return im


def with_strategy(src, dst, model: str, processor: str):
    """Copy the checkpoint ``src`` to ``dst`` with the given feature strategies."""
    shutil.copytree(src, dst)
    for name, value in (("config.json", model), ("processor_config.json", processor)):
        cfg = json.loads((dst / name).read_text())
        cfg["vision_feature_select_strategy"] = value
        (dst / name).write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def full_checkpoint(checkpoint, tmp_path_factory):
    return with_strategy(checkpoint("llava"), tmp_path_factory.mktemp("llava_full") / "model", "full", "full")


@torch.no_grad()
def test_cls_token_kept_out_of_the_vision_grid(full_checkpoint, loaded, tmp_path):
    lm = load_model("llava_full", "llava", str(full_checkpoint))
    image = scene()
    s = capture_attention(lm, image, QUESTION, max_new_tokens=3, prefill_rows="all_text")
    inputs = lm.adapter.build_inputs(lm.processor, image, QUESTION)
    (start, end), = token_spans(inputs["input_ids"][0], lm.model.config.image_token_id)
    assert end - start == 17  # CLS + 4×4 patches
    assert s.spans.tolist() == [[start + 1, end]] and s.cls_positions.tolist() == [start]
    assert s.grid.tolist() == [[4, 4]]
    # the same boxes as the default strategy (CLS dropped) gives
    default = loaded("llava")
    d_inputs = default.adapter.build_inputs(default.processor, image, QUESTION)
    d_layout = default.adapter.vision_layout(default.model, default.processor, d_inputs, image.size)
    np.testing.assert_array_equal(s.token_boxes, d_layout.token_boxes)
    # the model puts the CLS feature first in the run, then the patches in the default order
    kw = dict(pixel_values=inputs["pixel_values"], vision_feature_layer=-2)
    get = lm.model.model.get_image_features
    full = get(**kw, vision_feature_select_strategy="full").pooler_output[0]
    patches = get(**kw, vision_feature_select_strategy="default").pooler_output[0]
    torch.testing.assert_close(full[1:], patches, atol=0, rtol=0)
    # 'all_text' rows skip the CLS token like every image token
    n = len(s.input_ids)
    assert s.prefill_positions.tolist() == [p for p in range(n) if not start <= p < end]
    # vision encoder: patch k feeds vision token k
    ve = s.vision_encoder
    assert ve.has_cls and ve.patch_token.tolist() == list(range(16))
    np.testing.assert_array_equal(ve.patch_boxes, s.token_boxes)
    # HDF5 round trip, then every metric on the patch tokens
    write_sample(tmp_path / "s.h5", s, attention_dtype="float32")
    back = read_sample(tmp_path / "s.h5")
    assert back.cls_positions.tolist() == [start] and back.spans.tolist() == s.spans.tolist()
    back.boxes, back.labels, back.colours = np.array([[17, 17, 23, 23]], np.float32), ["square"], ["white"]
    config = {"questions": {"q": {"text": "Hi?"}}, "models": {"m": {"family": "llava", "path": "x"}},
              "metrics": {name: {} for name in METRICS}}
    metrics_cfg = load_config(config)["metrics"]
    for name in METRICS:
        table = get_metric(name).compute(back, metric_params(name, metrics_cfg))
        assert len(table), name
    # layer_profile gives the CLS token's weight its own share, out of the text shares
    cfg = metric_params("layer_profile", load_config({**config, "metrics": {"layer_profile": {
        "step_pooling": ["each"], "head_pooling": ["mean"], "exclude_sinks": False}}})["metrics"])
    lp = get_metric("layer_profile").compute(back, cfg).set_index(["step", "layer"])
    for t in range(back.n_steps):
        for layer in range(back.decode.shape[1]):
            row, a = lp.loc[(t, layer)], back.decode[t, layer].astype(np.float64)
            assert row["cls_share"] == pytest.approx(a[:, start].mean(), abs=1e-9) and row["cls_share"] > 0
            assert row["text_before_share"] == pytest.approx(a[:, :start].sum(-1).mean(), abs=1e-9)


def test_processor_and_model_strategies_disagree(checkpoint, tmp_path):
    """A processor laying out 16 image tokens for a model that feeds 17 is refused in one line."""
    path = with_strategy(checkpoint("llava"), tmp_path / "model", "full", "default")
    lm = load_model("mixed", "llava", str(path))
    with pytest.raises(ModelError, match=r"model 'mixed'.*16 image tokens.*'full'.*17") as e:
        capture_attention(lm, scene(), QUESTION, max_new_tokens=1)
    assert "\n" not in str(e.value)
