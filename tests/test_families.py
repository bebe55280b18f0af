"""Family adapters: vision tokens located, grids read from the processor, token boxes in original pixels.

Each orientation test draws one bright block in a non-square black image, finds the vision token
whose pixel_values patch(es) carry it (through the model's own patch order), and checks that our
token box for that token contains the block. A transposed, flipped or CLS-shifted grid fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vlmattn.engine.inference import load_model
from vlmattn.errors import ModelError

from .conftest import FAMILIES

# families with one token grid an image (the tiled ones: tests/test_tiled_families.py)
ONE_GRID = [f for f in FAMILIES if f in ("llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")]


def block_image(size, block):
    im = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(im).rectangle([block[0], block[1], block[2] - 1, block[3] - 1], fill=(255, 255, 255))
    return im


def contains(box, block, tol=1e-3):
    return (box[0] - tol <= block[0] and box[1] - tol <= block[1]
            and box[2] + tol >= block[2] and box[3] + tol >= block[3])


def bright_tokens_qwen(inputs, merge):
    """Vision tokens (flat index over the merged grid) whose patches carry bright pixels.

    pixel_values rows are patches in the vision tower's order; its patch merger fuses each run of
    merge² consecutive rows into one LLM token.
    """
    pv = inputs["pixel_values"]  # [P, C·T·p·p]
    bright = (pv.amax(dim=1) > 0).nonzero().flatten()  # black normalises below 0
    return sorted(set((bright // merge**2).tolist()))


def bright_tokens_llava(inputs, patch):
    """CLIP: conv patches of the crop, flattened row-major after the CLS token is dropped."""
    pv = inputs["pixel_values"][0]  # [C, H, W]
    c, h, w = pv.shape
    patches = pv.reshape(c, h // patch, patch, w // patch, patch).amax(dim=(0, 2, 4))  # [rows, cols]
    return sorted((patches > 0).flatten().nonzero().flatten().tolist())


# image size, block (x0, y0, x1, y1): one block inside one token cell, off every symmetry axis
CASES = {
    # 150×90 → smart_resize 140×84 → 3×5 tokens of 28 px; block in token (2, 3)
    "qwen2_vl": ((150, 90), (96, 66, 114, 84)),
    "qwen2_5_vl": ((150, 90), (96, 66, 114, 84)),
    # 150×90 → 160×96 (factor 32) → 3×5 tokens of 32 px; token (2, 3) covers x [90, 120) y [60, 90)
    "qwen3_vl": ((150, 90), (94, 64, 116, 86)),
    # 48×32 → resize shortest edge 32 → 48×32 → centre crop 32×32 at x 8; 4×4 tokens of 8 px;
    # token (2, 1) covers original x [16, 24) y [16, 24)
    "llava": ((48, 32), (17, 17, 23, 23)),
}


@pytest.mark.parametrize("family", ONE_GRID)
def test_token_boxes_follow_the_model_patch_order(loaded, family):
    lm = loaded(family)
    size, block = CASES[family]
    image = block_image(size, block)
    inputs = lm.adapter.build_inputs(lm.processor, image, "What shape is in the image?")
    layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, image.size)
    if family == "llava":
        tokens = bright_tokens_llava(inputs, int(lm.processor.patch_size))
    else:
        tokens = bright_tokens_qwen(inputs, int(lm.processor.image_processor.merge_size))
    assert len(tokens) == 1, tokens
    assert contains(layout.token_boxes[tokens[0]], block), (layout.token_boxes[tokens[0]], block)
    # only that token's box contains the block centre
    cx, cy = (block[0] + block[2]) / 2, (block[1] + block[3]) / 2
    b = layout.token_boxes
    hits = np.flatnonzero((b[:, 0] <= cx) & (cx < b[:, 2]) & (b[:, 1] <= cy) & (cy < b[:, 3]))
    assert hits.tolist() == tokens


@pytest.mark.parametrize("family", ONE_GRID)
def test_vision_tokens_and_grid(loaded, family):
    lm = loaded(family)
    image = Image.new("RGB", (150, 90))
    inputs = lm.adapter.build_inputs(lm.processor, image, "What shape is in the image?")
    layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, image.size)
    ids = inputs["input_ids"][0].numpy()
    (start, end), = layout.spans
    assert (ids[start:end] == lm.model.config.image_token_id).all()
    assert (ids == lm.model.config.image_token_id).sum() == end - start == layout.grids[0].prod()
    if family != "llava":
        t, gh, gw = inputs["image_grid_thw"][0].tolist()
        merge = lm.processor.image_processor.merge_size
        assert layout.grids[0].tolist() == [gh // merge, gw // merge]
        assert layout.grids[0, 1] > layout.grids[0, 0]  # wide image, wide grid
    # boxes tile the image (Qwen: the whole image; LLaVA: the centre crop)
    b = layout.token_boxes
    assert b[:, 0].min() >= 0 and b[:, 2].max() <= 150 and b[:, 3].max() <= 90


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_two_images(loaded, family):
    lm = loaded(family)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Is there?"}]}]
    prompt = lm.processor.apply_chat_template(msgs, add_generation_prompt=True)
    images = [Image.new("RGB", (150, 90)), Image.new("RGB", (90, 150))]
    inputs = lm.processor(images=images, text=prompt, return_tensors="pt")
    layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, [im.size for im in images])
    assert len(layout.spans) == 2
    assert layout.grids[0].tolist() == layout.grids[1].tolist()[::-1]
    n0 = int(layout.grids[0].prod())
    assert layout.token_boxes[:n0, 2].max() == pytest.approx(150)
    assert layout.token_boxes[n0:, 3].max() == pytest.approx(150)


def test_family_mismatch_is_one_line(checkpoint):
    with pytest.raises(ModelError, match=r"model 'm'.*type 'qwen2_vl', not family 'qwen3_vl'") as e:
        load_model("m", "qwen3_vl", str(checkpoint("qwen2_vl")))
    assert "\n" not in str(e.value)


def test_qwen_processor_round_trip(checkpoint):
    """The saved processor names the real class and reloads (image-only when torchvision is absent)."""
    import json

    from vlmattn.engine.processors import load_processor

    path = checkpoint("qwen2_5_vl")
    assert json.loads((path / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    p = load_processor(str(path))
    assert type(p).__name__ == "Qwen2_5_VLProcessor"
    assert p.image_processor.merge_size == 2
    assert isinstance(p(text="hi", return_tensors="pt")["input_ids"], torch.Tensor)


def test_every_family_has_an_adapter_a_schema_name_and_a_replica():
    import yaml

    from vlmattn.config import SCHEMA_PATH
    from vlmattn.engine.adapters import ADAPTERS
    from vlmattn.families import FAMILIES, ONLINE_PRUNING
    from vlmattn.models import replicas, tiled

    assert set(ADAPTERS) == set(FAMILIES) and set(ONLINE_PRUNING) <= set(FAMILIES)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    enum = schema["properties"]["models"]["additionalProperties"]["properties"]["family"]["enum"]
    assert list(enum) == list(FAMILIES)
    assert set(FAMILIES) == {"llava", *replicas.FAMILIES, *tiled.FAMILIES}
