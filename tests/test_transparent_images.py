"""Image files with transparency reach the model as its own processor would convert them.

transformers' image processors (``do_convert_rgb``) turn a PIL image with an alpha band, or with a
``transparency`` entry (palette or single-colour key), into RGB by compositing it onto white
(``transformers.image_transforms.convert_to_rgb``). ``open_image`` must give the same pixels, so the
model sees what it would see when its processor is handed the file as opened by PIL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_transforms import convert_to_rgb

from vlmattn.engine.inference import capture_attention, open_image
from vlmattn.plotting import read_image

QUESTION = "What shape is in the image?"


def rgba_array() -> np.ndarray:
    """48×40 RGBA: fully transparent where the colour is a saturated red, an opaque blue block and a
    half-transparent green band (transparent pixels whose colour is not white)."""
    a = np.zeros((40, 48, 4), np.uint8)
    a[...] = (200, 30, 60, 0)
    a[10:30, 5:25] = (20, 90, 200, 255)
    a[0:10, 28:48] = (20, 200, 20, 128)
    a[32:40, 0:20] = (240, 240, 10, 37)
    return a


def write(path, mode: str):
    """A PNG of ``mode`` with transparent parts whose stored colour is not white."""
    a = rgba_array()
    if mode == "RGBA":
        im = Image.fromarray(a, "RGBA")
    elif mode == "LA":
        im = Image.fromarray(a, "RGBA").convert("LA")
    elif mode == "P":  # palette with one transparent entry
        im = Image.fromarray(a[..., :3], "RGB").quantize(colors=8)
        im.info["transparency"] = int(np.asarray(im)[0, 0])
    elif mode == "L":  # single-colour transparency key (tRNS)
        im = Image.fromarray(a, "RGBA").convert("L")
        im.info["transparency"] = int(np.asarray(im)[0, 0])
    else:
        im = Image.fromarray(a[..., :3], "RGB")
    im.save(path)
    return path


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "RGB"])
def test_open_image_converts_like_the_processor(tmp_path, mode):
    path = write(tmp_path / f"{mode}.png", mode)
    with Image.open(path) as im:
        assert (mode == "RGB") != ("A" in im.getbands() or "transparency" in im.info)
        want = convert_to_rgb(im, return_numpy=True)
    got = open_image(path)
    assert got.mode == "RGB" and got.size == (48, 40)
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(read_image(path), want)  # overlays show the same pixels


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@torch.no_grad()
def test_transparent_png_generation_matches_the_processor(loaded, tmp_path, family):
    lm = loaded(family)
    path = write(tmp_path / "rgba.png", "RGBA")
    with Image.open(path) as original:  # the processor fed the file itself, RGBA
        assert original.mode == "RGBA"
        ref = lm.adapter.build_inputs(lm.processor, original, QUESTION)
    ours = lm.adapter.build_inputs(lm.processor, open_image(path), QUESTION)
    torch.testing.assert_close(ours["pixel_values"], ref["pixel_values"], atol=0, rtol=0)
    n = ref["input_ids"].shape[1]
    want = lm.model.generate(**ref, max_new_tokens=4, do_sample=False)[0, n:]
    s = capture_attention(lm, open_image(path), QUESTION, max_new_tokens=4, vision_encoder=False)
    assert s.generated_ids.tolist() == want.tolist()
