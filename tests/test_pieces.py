"""How the analyses treat an image of several pieces, on a hand-made sample: a 2 × 2 base grid and a
4 × 4 high-resolution grid over the same 64 × 64 image, a newline marker after each high-res row."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.synthetic_attention import grid_boxes, make_sample, metric_cfg
from vlmattn import maps
from vlmattn.metrics import get_metric
from vlmattn.store import decode_segment_sums


def two_pieces(p_base: np.ndarray, p_high: np.ndarray, marker_mass: float = 0.0):
    """One step, layer and head whose decode row puts ``p_base [4]`` on the base grid, ``p_high [16]``
    on the high-resolution grid (row-major, a newline key after each of its rows carrying
    ``marker_mass / 4``) and the rest on the text before the image."""
    vision = np.concatenate([p_base, p_high])[None, None, None]
    s = make_sample(vision, grid=(4, 5), boxes=[[0, 0, 20, 20]], labels=["square"])  # grid replaced below
    n_before = 3
    base = [n_before, n_before + 4]
    row0 = n_before + 4 + np.arange(4) * 5  # 4 high-res rows of 4 tokens, each followed by a newline
    spans = np.array([base] + [[r, r + 4] for r in row0])
    newlines = row0 + 4
    n = n_before + 4 + 20 + 4
    decode = np.zeros((1, 1, 1, n))
    decode[..., base[0]:base[1]] = p_base
    positions = np.concatenate([np.arange(r, r + 4) for r in row0])
    decode[..., positions] = p_high
    decode[..., newlines] = marker_mass / 4
    decode[..., :n_before] = (1 - decode.sum()) / n_before
    return replace(
        s, input_ids=np.arange(n), input_tokens=["t"] * n, spans=spans, grid=np.array([[2, 2], [4, 4]]),
        token_boxes=np.concatenate([grid_boxes(2, 2, 64, 64), grid_boxes(4, 4, 64, 64)]), decode=decode,
        decode_key_len=np.array([n]), prefill=np.zeros((1, 1, 0, n), np.float32),
        piece_image=np.array([0, 0]), piece_kinds=["base", "highres"], marker_positions=newlines,
        marker_kinds=["newline"] * 4)


def test_grid_operations_run_on_each_piece():
    """A peak at the base grid's top-left and one at the high-res grid's bottom-right: two hotspots, one
    per piece, each with its piece's area share; a component never crosses pieces."""
    p_base = np.array([0.3, 0.0, 0.0, 0.0])
    p_high = np.zeros(16)
    p_high[15] = 0.2
    s = two_pieces(p_base / 0.5, p_high / 0.5)  # renormalised: 0.6 and 0.4
    cfg = metric_cfg("hotspots", percentile=90.0, head_pooling=[], step_pooling=["first"], exclude_sinks=False)
    table = get_metric("hotspots").compute(s, cfg)
    assert list(table.columns).index("piece") == list(table.columns).index("hotspot") + 1
    assert table["piece"].tolist() == [0, 1]
    np.testing.assert_allclose(table["area"], [1 / 4, 1 / 16])  # share of the piece's area
    np.testing.assert_allclose(table["mass"], [0.6, 0.4])
    np.testing.assert_allclose(table[["x", "y"]].to_numpy(), [[0.25, 0.25], [0.875, 0.875]])
    labels, n = maps.label_tokens(np.ones(20, bool), s)
    assert n == 2 and set(labels[:4]) == {1} and set(labels[4:]) == {2}


def test_markers_are_their_own_segment_and_out_of_the_map():
    s = two_pieces(np.full(4, 0.1), np.full(16, 0.02), marker_mass=0.2)
    seg = decode_segment_sums(s.decode, len(s.input_ids), s.vision_index, s.cls_positions, s.decode_key_len,
                              s.marker_positions)
    np.testing.assert_allclose(seg[0, 0, 0], [0.0, 1 - 0.72 - 0.2, 0.0, 0.0, 0.2])
    table = get_metric("layer_profile").compute(s, metric_cfg("layer_profile", head_pooling=["mean"],
                                                              step_pooling=["first"], exclude_sinks=False))
    row = table.iloc[0]
    assert row["marker_share"] == pytest.approx(0.2) and row["vision_share"] == pytest.approx(0.72)
    shares = [c for c in table.columns if c.endswith("_share")]
    assert row[shares].sum() == pytest.approx(1.0)
    sinks = get_metric("sinks").compute(s, metric_cfg("sinks"))
    assert sinks["piece"].tolist() == [0] * 4 + [1] * 16 and sinks["row"].max() == 3


def test_pixel_density_spreads_each_token_over_its_box_and_sums_pieces():
    s = two_pieces(np.array([1.0, 0, 0, 0]) * 0.5, np.eye(16)[5] * 0.5)
    p = np.concatenate([np.array([1.0, 0, 0, 0]), np.eye(16)[5]]) * 0.5
    d = maps.pixel_density(p, s.token_boxes, (64, 64))
    assert d.shape == (64, 64) and d.sum() == pytest.approx(1.0)
    # base token 0 covers [0, 32)²: 0.5 / 32² there; high-res token 5 (row 1, col 1) covers [16, 32)²
    assert d[0, 0] == pytest.approx(0.5 / 32**2)
    assert d[20, 20] == pytest.approx(0.5 / 32**2 + 0.5 / 16**2)
    assert d[40, 40] == 0
    # the mass in a box under the density is Σ p · overlap
    box = (8, 8, 24, 24)
    mass = float(p @ maps.box_overlap(s.token_boxes, box))
    assert mass == pytest.approx(d[8:24, 8:24].sum())


def test_every_metric_runs_on_two_pieces():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(20), size=(3, 2, 4))  # [T, L, H, V], every map its own
    s = two_pieces(p[0, 0, 0, :4], p[0, 0, 0, 4:])
    rows = np.stack([np.stack([np.stack([two_pieces(m[:4], m[4:]).decode[0, 0, 0] for m in layer]) for layer in step])
                     for step in p])  # [T, L, H, N]
    s = replace(s, decode=np.pad(rows, ((0, 0),) * 3 + ((0, 2),)), decode_key_len=len(s.input_ids) + np.arange(3),
                generated_ids=np.arange(3), generated_tokens=["a", "b", "c"])
    from vlmattn.metrics import METRICS

    for name in METRICS:
        table = get_metric(name).compute(s, metric_cfg(name))
        assert len(table) > 0, name
