"""Tiled families: every piece's tokens located by the model's own code, boxes that tile the image,
a bright patch found where the boxes say, and capture equal to eager attention at several sizes.

The reference for where each image token comes from is the model itself: the family's feature
packing (LLaVA-NeXT's ``pack_image_features``, …) run on one-hot features, so that each packed
token names the encoder tile and patch it was built from, and the image tokens without one (newline)
are zero. The pixels a patch sees come from ``pixel_values`` (a bright block drawn into a black image
lights exactly the patches that see it), never from the adapter's arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText

from vlmattn.engine.inference import capture_attention
from vlmattn.models import tiled

QUESTION = "What shape is in the image?"
# (width, height): wide, square, extreme aspect ratios, and the largest tiling (LLaVA-NeXT: 2 × 2 tiles)
SIZES = {
    "llava_next": [(50, 30), (40, 40), (20, 90), (130, 37), (200, 200)],
    # LLaVA-OneVision replica: 32 px tiles, up to 6 × 6; 200 × 200 takes 6 × 6 tiles, beyond anyres_max_9:
    # its 24 × 24 high-resolution grid is downsampled to 12 × 12
    "llava_onevision": [(50, 30), (40, 40), (130, 37), (200, 200), (300, 40)],
    # InternVL replica: 64 px tiles, at most 6: one tile (square), 3 × 2, 1 × 4, and 20:1, capped at 6 × 1
    "internvl": [(40, 40), (50, 30), (30, 100), (200, 10), (64, 96)],
    # Gemma 3 replica: 64 px, pan-and-scan crops of at least 32 px from a 1.2 aspect ratio: none (square,
    # 50 × 30: a crop would be 30 px), 3 crops, 2 crops, 4 crops (the limit, of a 6:1 image)
    "gemma3": [(40, 40), (50, 30), (300, 100), (100, 250), (480, 80)],
    # Idefics3 / SmolVLM replicas: 64 px tiles, longest edge 192 (3 tiles): 3 × 2, 3 × 1, 2 × 3, 3 × 3 (the
    # limit), 10:1
    "idefics3": [(50, 30), (300, 100), (100, 250), (40, 40), (400, 40)],
    "smolvlm": [(50, 30), (100, 250), (400, 40)],
}
EXACT_SIZES = {"llava_next": [(50, 30), (20, 90), (200, 200)], "llava_onevision": [(50, 30), (300, 40), (200, 200)],
               "internvl": [(40, 40), (50, 30), (200, 10)],
               "gemma3": [(40, 40), (300, 100), (480, 80)], "idefics3": [(50, 30), (100, 250), (400, 40)],
               "smolvlm": [(50, 30), (400, 40), (40, 40)]}


def sources_llava_next(lm, inputs) -> list[np.ndarray]:
    """Per image token of the prompt (in order), the global indices ``tile · P + patch`` of the encoder
    patches it is built from (empty for a newline token), by ``pack_image_features`` on one-hot
    features of every (tile, patch)."""
    model = lm.model.model
    n_tiles = int(inputs["pixel_values"].shape[1])
    g = model.config.vision_config.image_size // model.config.vision_config.patch_size
    d = n_tiles * g * g
    feats = torch.eye(d).reshape(n_tiles, g * g, d)
    if lm.family == "llava_onevision":  # bilinear downsampling mixes up to 2 × 2 patches into a token
        packed, _ = model.pack_image_features([feats], inputs["image_sizes"], image_newline=torch.zeros(d),
                                              vision_aspect_ratio=model.config.vision_aspect_ratio)
    else:
        packed, _ = model.pack_image_features([feats], inputs["image_sizes"], "default",
                                              image_newline=torch.zeros(d))
    return [np.flatnonzero(row.numpy() > 1e-9) for row in packed[0]]


def sources_internvl(lm, inputs) -> list[np.ndarray]:
    """Per image token, its encoder patches (``tile · P + patch``), by the model's ``pixel_shuffle`` on
    one-hot features of every (tile, patch) laid out as the model lays them out."""
    model = lm.model.model
    n_tiles = int(inputs["pixel_values"].shape[0])
    vc = model.config.vision_config
    side = vc.image_size[0] // vc.patch_size[0]
    d = n_tiles * side * side
    feats = torch.eye(d).reshape(n_tiles, side, side, d)
    shuffled = model.pixel_shuffle(feats, scale_factor=model.config.downsample_ratio)  # [tiles, g, g, 4d]
    per_token = shuffled.reshape(-1, shuffled.shape[-1] // d, d)
    return [np.flatnonzero(row.sum(0).numpy()) for row in per_token]


def wrappers_internvl(lm, ids) -> np.ndarray:
    tok, proc = lm.processor.tokenizer, lm.processor
    wrap = [tok.convert_tokens_to_ids(proc.start_image_token), tok.convert_tokens_to_ids(proc.end_image_token)]
    return np.flatnonzero(np.isin(ids, wrap))


def lit_patches(lm, inputs) -> np.ndarray:
    """``[tiles · P]`` bool: the encoder patches whose pixels are bright (black normalises below 0)."""
    vc = lm.model.config.vision_config
    p = vc.patch_size if isinstance(vc.patch_size, int) else vc.patch_size[0]
    pv = inputs["pixel_values"]
    pv = pv.reshape(-1, *pv.shape[-3:])  # [tiles, C, S, S]
    t, c, s, _ = pv.shape
    return (pv.reshape(t, c, s // p, p, s // p, p).amax(dim=(1, 3, 5)) > 0).reshape(-1).numpy()


def sources_gemma3(lm, inputs) -> list[np.ndarray]:
    """Per image token, its SigLIP patches (``piece · P + patch``), by the model's own projector pooling
    (``avg_pool``) on one-hot features of every (piece, patch)."""
    proj = lm.model.model.multi_modal_projector
    n_pieces = int(inputs["pixel_values"].shape[0])
    n = proj.patches_per_image
    d = n_pieces * n * n
    feats = torch.eye(d).reshape(n_pieces, n * n, d).transpose(1, 2).reshape(n_pieces, d, n, n)
    pooled = proj.avg_pool(feats).flatten(2).transpose(1, 2)  # [pieces, g², d]
    return [np.flatnonzero(row.numpy()) for row in pooled.reshape(-1, d)]


def sources_idefics3(lm, inputs) -> list[np.ndarray]:
    """Per image token, its patches (``piece · P + patch``), by the connector's ``pixel_shuffle`` on
    one-hot features of every (piece, patch)."""
    model = lm.model.model
    n_pieces = int(inputs["pixel_values"].shape[1])
    vc = model.config.vision_config
    n = vc.image_size // vc.patch_size
    d = n_pieces * n * n
    shuffled = model.connector.pixel_shuffle(torch.eye(d).reshape(n_pieces, n * n, d), model.config.scale_factor)
    per_token = shuffled.reshape(-1, shuffled.shape[-1] // d, d)
    return [np.flatnonzero(row.sum(0).numpy()) for row in per_token]


def wrappers_idefics3(lm, ids) -> np.ndarray:
    tags = ["<fake_token_around_image>", "<global-img>"]
    tags += [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    return np.flatnonzero(np.isin(ids, lm.processor.tokenizer.convert_tokens_to_ids(tags)))


SOURCES = {"llava_next": sources_llava_next, "llava_onevision": sources_llava_next, "internvl": sources_internvl,
           "gemma3": sources_gemma3,
           "idefics3": sources_idefics3, "smolvlm": sources_idefics3}
#: box-less tokens that are not image-token ids (wrappers), per family
WRAPPERS = {"internvl": wrappers_internvl, "idefics3": wrappers_idefics3, "smolvlm": wrappers_idefics3,
            "gemma3": lambda lm, ids: np.flatnonzero(np.isin(
    ids, [lm.model.config.boi_token_index, lm.model.config.eoi_token_index]))}


def resampled(lay) -> bool:
    """LLaVA-OneVision's downsampled high-resolution grid: fewer tokens than the base grid's density
    would give (its boxes are larger than the base grid's feature cells)."""
    if "highres" not in lay.piece_kinds:
        return False
    piece = np.repeat(np.arange(len(lay.grids)), lay.grids.prod(1))
    high = lay.token_boxes[piece == lay.piece_kinds.index("highres")]
    base = lay.token_boxes[piece == lay.piece_kinds.index("base")]
    area = lambda b: ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()  # noqa: E731
    return bool(area(high) / len(high) > 1.2 * area(base) / len(base) / 4)


def layout_of(lm, image):
    inputs = lm.adapter.build_inputs(lm.processor, image, QUESTION)
    return inputs, lm.adapter.vision_layout(lm.model, lm.processor, inputs, image.size)


def cases():
    return [(f, s) for f in tiled.FAMILIES for s in SIZES[f]]


@pytest.mark.parametrize("family, size", cases())
def test_tokens_are_where_the_model_puts_them(loaded, family, size):
    """Vision tokens and markers at the prompt positions the model fills with patch features and
    markers; each vision token's encoder patch (the adapter's patch layout) is the one the model
    packs there."""
    lm = loaded(family)
    inputs, lay = layout_of(lm, Image.new("RGB", size))
    ids = inputs["input_ids"][0].numpy()
    image_pos = np.flatnonzero(ids == lm.model.config.image_token_id)
    src = SOURCES[family](lm, inputs)
    assert len(src) == len(image_pos)
    is_patch = np.array([len(x) > 0 for x in src])
    np.testing.assert_array_equal(lay.vision_positions, image_pos[is_patch])
    wrappers = WRAPPERS[family](lm, ids) if family in WRAPPERS else np.zeros(0, np.int64)
    np.testing.assert_array_equal(np.sort(lay.marker_positions), np.union1d(image_pos[~is_patch], wrappers))
    # the patch layout: which encoder patches feed which vision token
    pl = lm.adapter.patch_layout(lm.model, lm.processor, inputs, size)
    feeds = [np.flatnonzero(pl.patch_token == t) for t in range(len(lay.token_boxes))]
    want = [x for x, ok in zip(src, is_patch, strict=True) if ok]
    if resampled(lay):  # each patch goes to one token among those its feature reaches
        assert all(set(a) <= set(b) for a, b in zip(feeds, want, strict=True))
        assert sum(len(a) for a in feeds) == len(set(np.concatenate(want)))
    else:
        assert all(np.array_equal(a, b) for a, b in zip(feeds, want, strict=True))
    # and each vision token's box holds its patches' boxes
    for t, patches in enumerate(feeds):
        pb, tb = pl.patch_boxes[patches], lay.token_boxes[t]
        assert (pb[:, :2] >= tb[:2] - 1e-3).all() and (pb[:, 2:] <= tb[2:] + 1e-3).all()


def paint(boxes: np.ndarray, size) -> np.ndarray:
    """``[h, w]`` count of boxes covering each pixel (boxes on whole pixels, as every box here is)."""
    w, h = size
    canvas = np.zeros((h, w), np.int64)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64):
        canvas[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] += 1
    return canvas


def coverings(lay) -> list[tuple[str, np.ndarray]]:
    """Groups of pieces that each see the whole image once: a piece on its own (image, base,
    high-resolution grid, thumbnail, global image), or all the tiles (crops) of the image together;
    ``(kind, token indices)``."""
    piece = np.repeat(np.arange(len(lay.grids)), lay.grids.prod(1))
    out, tiles = [], []
    for i, kind in enumerate(lay.piece_kinds):
        if kind in ("tile", "crop"):
            tiles.append(i)
        else:
            out.append((kind, np.flatnonzero(piece == i)))
    if tiles:
        out.append((lay.piece_kinds[tiles[0]], np.flatnonzero(np.isin(piece, tiles))))
    return out


@pytest.mark.parametrize("family, size", cases())
def test_each_piece_tiles_the_image(loaded, family, size):
    """Painted box by box, each covering (a piece, or the tiles together) covers every pixel it sees
    exactly once; only a high-resolution grid may leave uncovered a strip at the image border less
    than one of its tokens wide (the model's rounding when it removes the padding)."""
    lm = loaded(family)
    inputs, lay = layout_of(lm, Image.new("RGB", size))
    start = 0
    for rows, cols in lay.grids:  # the boxes of a grid run row-major: x grows along a row, y down a column
        grid = lay.token_boxes[start:start + rows * cols].reshape(rows, cols, 4)
        start += rows * cols
        assert (np.diff(grid[:, :, 0], axis=1) > 0).all() and (np.diff(grid[:, :, 1], axis=0) > 0).all()
    for kind, tokens in coverings(lay):
        boxes = lay.token_boxes[tokens]
        # only whole-pixel boxes are painted exactly; scale to a common multiple first
        scale = 1
        while not np.allclose(boxes * scale, np.round(boxes * scale), atol=1e-3) and scale < 64:
            scale += 1
        canvas = paint(boxes * scale, (size[0] * scale, size[1] * scale))
        assert canvas.max() == 1, f"{kind}: overlapping boxes"
        covered = canvas == 1
        if kind != "highres":
            assert covered.all(), f"{kind}: must cover the whole image"
            continue
        ys, xs = np.flatnonzero(covered.any(1)), np.flatnonzero(covered.any(0))
        assert covered[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1].all(), f"{kind}: a hole inside the piece"
        tw = (boxes[:, 2] - boxes[:, 0]).max() * scale
        th = (boxes[:, 3] - boxes[:, 1]).max() * scale
        assert xs[0] < tw and canvas.shape[1] - 1 - xs[-1] < tw and ys[0] < th and canvas.shape[0] - 1 - ys[-1] < th


def block_image(size, block):
    im = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(im).rectangle([block[0], block[1], block[2] - 1, block[3] - 1], fill=(255, 255, 255))
    return im


@pytest.mark.parametrize("family, size", cases())
def test_a_bright_patch_lands_on_the_tokens_whose_boxes_hold_it(loaded, family, size):
    """A white block in a black image: the tokens the model builds from lit patches are exactly those
    whose boxes overlap the block (within a pixel of resampling blur)."""
    lm = loaded(family)
    w, h = size
    block = (int(0.6 * w), int(0.3 * h), int(0.6 * w) + max(2, w // 8), int(0.3 * h) + max(2, h // 8))
    inputs, lay = layout_of(lm, block_image(size, block))
    lit = lit_patches(lm, inputs)
    src = [x for x in SOURCES[family](lm, inputs) if len(x)]  # the vision tokens' patches
    tokens_lit = np.flatnonzero([lit[x].any() for x in src])
    b = lay.token_boxes
    pad = 1.0 + max(w, h) / 64  # resampling spreads a block by about a source pixel
    if resampled(lay):  # bilinear weights reach half a token beyond its box
        pad += float((lay.token_boxes[:, 2:] - lay.token_boxes[:, :2]).max())
    near = ((b[:, 0] < block[2] + pad) & (b[:, 2] > block[0] - pad) & (b[:, 1] < block[3] + pad)
            & (b[:, 3] > block[1] - pad))
    inside = ((b[:, 0] < block[2] - pad) & (b[:, 2] > block[0] + pad) & (b[:, 1] < block[3] - pad)
              & (b[:, 3] > block[1] + pad))
    assert len(tokens_lit) > 0
    assert near[tokens_lit].all(), "a lit token's box is away from the block"
    assert set(np.flatnonzero(inside)) <= set(tokens_lit.tolist()), "a token whose box holds the block is dark"
    for kind, tokens in coverings(lay):  # every covering sees the block
        assert np.isin(tokens, tokens_lit).any(), kind


@pytest.fixture(scope="module")
def eager(checkpoint):
    cache = {}

    def get(family):
        if family not in cache:
            path = checkpoint(family)
            cache[family] = (AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval(),
                             AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa").eval())
        return cache[family]

    return get


def scene(size):
    im = Image.new("RGB", size, (0, 0, 0))
    w, h = size
    ImageDraw.Draw(im).ellipse([w // 5, h // 6, w // 2, h // 2], fill=(40, 180, 60))
    return im


@pytest.mark.parametrize("family, size", [(f, s) for f in tiled.FAMILIES for s in EXACT_SIZES[f]])
@torch.no_grad()
def test_capture_equals_eager_at_several_sizes(loaded, eager, family, size):
    """Decode rows and every prefill row equal eager attention (float32, ≤ 1e-5), generation equals SDPA.

    Reference: one eager forward pass without a cache over the prompt and the generated tokens, with
    ``output_attentions=True``, whose ``[H, M, M]`` matrices sit on absolute key positions (sliding
    windows and Gemma 3's bidirectional image blocks in their masks): decode row ``t`` is its row
    ``N − 1 + t``, prefill row ``r`` its row ``r``."""
    lm = loaded(family)
    ref_model, sdpa = eager(family)
    image = scene(size)
    inputs = lm.adapter.build_inputs(lm.processor, image, QUESTION)
    n = inputs["input_ids"].shape[1]
    plain = sdpa.generate(**inputs, max_new_tokens=3, do_sample=False)
    s = capture_attention(lm, image, QUESTION, max_new_tokens=3, prefill_rows="all")
    assert s.generated_ids.tolist() == plain[0, n:].tolist()
    m = plain.shape[1] - 1  # the last generated token is no query of a stored row
    full = dict(inputs, input_ids=plain[:, :m], attention_mask=torch.ones(1, m, dtype=torch.long))
    if "token_type_ids" in inputs:  # Gemma 3: generated tokens are text
        full["token_type_ids"] = torch.nn.functional.pad(inputs["token_type_ids"], (0, m - n))
    ref = ref_model(**full, output_attentions=True, use_cache=False).attentions
    for layer, a in enumerate(ref):
        a = a[0].numpy()  # [H, M, M]
        np.testing.assert_allclose(s.prefill[layer], a[:, :n, :n], atol=1e-5, rtol=0)
        for t in range(s.n_steps):
            np.testing.assert_allclose(s.decode[t, layer, :, : n + t], a[:, n - 1 + t, : n + t], atol=1e-5, rtol=0)
    if family == "gemma3":  # the image tokens' prefill rows see the whole piece, later tokens of it too
        start, end = s.spans[0]
        assert (s.prefill[0][:, start, start + 1:end] > 0).all()


@pytest.mark.parametrize("layout", ["full", "compact"])
def test_pieces_and_markers_round_trip_and_their_segment(loaded, tmp_path, layout):
    """A tiled sample's pieces and markers survive the cache; the markers' decode segment is the sum of
    the rows at the marker positions, and the segments with the vision columns partition each row."""
    from vlmattn.errors import InputError
    from vlmattn.store import read_sample, write_sample

    lm = loaded("llava_next")
    s = capture_attention(lm, scene((50, 30)), QUESTION, max_new_tokens=2)
    path = tmp_path / "s.h5"
    write_sample(path, s, attention_dtype="float32", layout=layout)
    back = read_sample(path)
    assert back.piece_kinds == ["base", "highres"] and back.marker_kinds == ["newline"] * 4
    np.testing.assert_array_equal(back.piece_image, [0, 0])
    np.testing.assert_array_equal(back.marker_positions, s.marker_positions)
    np.testing.assert_array_equal(back.grid, s.grid)
    markers = back.decode_segments[..., -1]
    np.testing.assert_allclose(markers, s.decode[..., s.marker_positions].astype(np.float64).sum(-1), atol=1e-6)
    total = back.decode_vision.astype(np.float64).sum(-1) + back.decode_segments.sum(-1)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    import h5py

    with h5py.File(path, "a") as f:  # a marker on a vision token: no longer one layout
        f["vision/marker_positions"][0] = f["vision/spans"][0, 0]
    with pytest.raises(InputError, match=r"s\.h5: /vision does not describe one layout"):
        read_sample(path)


@pytest.mark.parametrize("family", tiled.FAMILIES)
def test_every_metric_and_the_offline_pruning_scores_on_a_replica_sample(loaded, family):
    """A captured sample of each tiled replica (two images' worth of pieces and markers) goes through
    every metric and the offline pruning scorers and tables with the schema's defaults."""
    from tests.synthetic_attention import MINIMAL, metric_cfg
    from vlmattn.maps import tiled as is_tiled
    from vlmattn.metrics import METRICS, get_metric
    from vlmattn.pruning import offline
    from vlmattn.pruning.jobs import model_budgets
    from vlmattn.pruning.options import offline_options
    from vlmattn.workflow import load_config

    lm = loaded(family)
    s = capture_attention(lm, scene((300, 100)), QUESTION, max_new_tokens=3, prefill_rows="all_text",
                          meta={"image_id": "wide", "question_id": "q"})
    assert is_tiled(s)
    from dataclasses import replace

    s = replace(s, boxes=np.array([[60, 16, 150, 50]], np.float32), labels=["circle"], colours=["green"])  # scene()
    for name in METRICS:
        table = get_metric(name).compute(s, metric_cfg(name))
        assert len(table) > 0, name
    options = offline_options(load_config({**MINIMAL, "extraction": {"prefill_rows": "all_text"},
                                           "pruning": {"prune_layer": 1, "n_heads": 2,
                                                       "online": {"models": []},
                                                       "learned": {"enabled": False}}}))
    scores = offline.sample_scores(s, prune_layer=1, **options["scores"])
    budgets = model_budgets(len(s.vision_index), options, s.n_layers, family)
    table = offline.offline_table(s, scores, budgets, prune_layer=1, step=0, pooling=True)
    assert len(table) > 0 and table["recall"].notna().all() and table["retained_mass"].notna().all()
