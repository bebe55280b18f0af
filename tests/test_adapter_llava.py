"""LLaVA vision layout: token boxes follow the processor's resize and centre crop."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vlmattn.engine.inference import load_model


@pytest.mark.parametrize("size, block", [((80, 48), (50, 20, 58, 28)), ((48, 96), (10, 44, 16, 52)),
                                         ((64, 64), (0, 0, 8, 8))])
def test_marker_lands_in_its_token_box(gqa_checkpoint, size, block):
    """A white block in a non-square image: the token whose patch is brightest must cover the block."""
    lm = load_model("toy", "llava", str(gqa_checkpoint))
    img = Image.new("RGB", size, "black")
    ImageDraw.Draw(img).rectangle([block[0], block[1], block[2] - 1, block[3] - 1], fill="white")
    inputs = lm.adapter.build_inputs(lm.processor, img, "What shape is in the image?")
    layout = lm.adapter.vision_layout(lm.model, lm.processor, inputs, img.size)
    rows, cols = layout.grids[0]
    px = inputs["pixel_values"][0].mean(0).numpy()  # [H, W]
    p = lm.processor.patch_size
    patch_means = px.reshape(rows, p, cols, p).mean((1, 3)).ravel()  # row-major, no CLS
    token = int(np.argmax(patch_means))
    x0, y0, x1, y1 = layout.token_boxes[token]
    cx, cy = (block[0] + block[2]) / 2, (block[1] + block[3]) / 2
    assert x0 <= cx <= x1 and y0 <= cy <= y1
    assert len(layout.token_boxes) == layout.spans[0, 1] - layout.spans[0, 0] == rows * cols


def test_boxes_tile_a_square_image(gqa_checkpoint):
    lm = load_model("toy", "llava", str(gqa_checkpoint))
    img = Image.new("RGB", (96, 96))
    inputs = lm.adapter.build_inputs(lm.processor, img, "Hi?")
    b = lm.adapter.vision_layout(lm.model, lm.processor, inputs, img.size).token_boxes
    assert ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum() == pytest.approx(96 * 96)
    np.testing.assert_allclose(b[0], [0, 0, 24, 24])
    np.testing.assert_allclose(b[1], [24, 0, 48, 24])  # row-major: second token is to the right
