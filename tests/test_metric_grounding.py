"""grounding: IoU, pointing game and energy against closed forms and scikit-learn's Jaccard score."""

import numpy as np
import pytest
from sklearn.metrics import jaccard_score

from tests.synthetic_attention import make_sample, metric_cfg, one_hot, tile
from vlmattn.maps import box_mask, top_mass_mask
from vlmattn.metrics.grounding import compute, size_class

CFG = {"step_pooling": ["last"], "head_pooling": [], "exclude_sinks": False}


def config(**changes) -> dict:
    """The grounding block of CFG with ``changes``, schema defaults filled in."""
    return metric_cfg("grounding", **{**CFG, **changes})
BOX = [0, 0, 32, 32]  # the top-left quadrant of a 64 × 64 image: tokens 0, 1, 4, 5 of a 4 × 4 grid


def test_one_hot_inside_the_box():
    df = compute(make_sample(tile(one_hot(5, 16)), boxes=[BOX], labels=["cat"]), config()).iloc[0]
    assert (df["pointing"], df["energy"]) == (1, 1.0)
    assert df["iou"] == pytest.approx(1 / 4)  # top set = 1 token, box = 4 tokens
    assert df["n_box_tokens"] == 4 and df["box_token_share"] == 0.25
    out = compute(make_sample(tile(one_hot(15, 16)), boxes=[BOX], labels=["cat"]), config()).iloc[0]
    assert (out["pointing"], out["energy"], out["iou"]) == (0, 0.0, 0.0)


def test_uniform_on_the_box_with_full_mass_gives_iou_one():
    p = np.zeros(16)
    p[[0, 1, 4, 5]] = 0.25
    df = compute(make_sample(tile(p), boxes=[BOX], labels=["cat"]), config(top_mass=1.0)).iloc[0]
    assert (df["iou"], df["energy"]) == pytest.approx((1.0, 1.0))


def test_iou_matches_sklearn_jaccard():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(36) * 0.3, size=(1, 3, 4))
    s = make_sample(p, boxes=[[5, 10, 40, 50], [30, 0, 64, 20]], labels=["a", "b"])
    df = compute(s, config(top_mass=0.6))
    w, h = 64, 64
    for i, b in enumerate(s.boxes):
        m = box_mask(s, b / np.array([w, h, w, h]))
        for layer in range(3):
            for head in range(4):
                a = top_mass_mask(p[0, layer, head], 0.6)
                r = df[(df["object"] == "ab"[i]) & (df["layer"] == layer) & (df["head"] == str(head))].iloc[0]
                assert r["iou"] == pytest.approx(jaccard_score(m, a), abs=1e-12)
                assert r["energy"] == pytest.approx(p[0, layer, head][m].sum(), abs=1e-12)
                assert r["pointing"] == int(m[np.argmax(p[0, layer, head])])


def test_size_classes_and_small_box_fallback():
    assert [size_class(a, 0.005, 0.05) for a in (0.004, 0.005, 0.049, 0.05)] == ["small", "medium", "medium", "large"]
    # a 4 × 4 px box (area 16 / 4096 ≈ 0.0039) between token centres: falls back to the token holding its centre
    boxes = [[18, 18, 22, 22], [0, 0, 64, 8], [0, 0, 32, 32]]
    s = make_sample(tile(one_hot(5, 16)), boxes=boxes, labels=["s", "m", "l"])
    df = compute(s, config()).set_index("object")
    assert df.loc["s", "size_class"] == "small" and df.loc["s", "n_box_tokens"] == 1
    assert df.loc["s", "pointing"] == 1  # token 5 holds (20, 20)
    assert df.loc["m", "size_class"] == "large"  # 64·8/4096 = 0.125
    assert df.loc["m", "box_area"] == pytest.approx(0.125)


def test_no_boxes_gives_an_empty_table_with_columns():
    df = compute(make_sample(tile(one_hot(5, 16))), config())
    assert df.empty and {"iou", "pointing", "energy", "size_class", "sinks"} <= set(df.columns)


def test_plots_without_any_box(tmp_path):
    from vlmattn.metrics.grounding import plot

    table = compute(make_sample(tile(one_hot(5, 16))), config())
    for col in ("model", "image", "question"):
        table.insert(0, col, [])
    plot(table, config(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grounding_by_size.png", "grounding_layer_head.png"]
