"""Corner pairs: the same synthetic scene with (A) and without (B) one object in the top-left quadrant."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from tests import REPO
from vlmattn.config import corner_pairs, image_ids, load_dataset, question_images, samples
from vlmattn.errors import ConfigError
from vlmattn.images import jobs
from vlmattn.images.synthetic import (
    COLOURS,
    SHAPES,
    annotation,
    corner_pair,
    draw,
    parse_corner_id,
    scene_shapes,
    scene_spec,
)
from vlmattn.images.synthetic import corner_pairs as pair_ids
from vlmattn.workflow import load_config

ID = re.compile(r"^[A-Za-z0-9]+([-_][A-Za-z0-9]+)*$")
WILDCARD = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")  # rules/common.smk wildcard_constraints.image
BASE = yaml.safe_load((REPO / "config.yaml").read_text())
N = 40  # pairs checked geometrically
SIZES = (224, 64, 33)


def config(n: int | None, seed: int = 0, **questions) -> dict:
    """The default config with ``n`` corner pairs (None: the schema's default) and no contrasts."""
    c = copy.deepcopy(BASE)
    c["seed"] = seed
    c.pop("contrasts", None)
    if n is None:
        c["images"]["synthetic"].pop("corner_pairs", None)
    else:
        c["images"]["synthetic"]["corner_pairs"] = n
    c["questions"].update(questions)
    return c


def inside(box, outer) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


def disjoint(a, b) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_schema_default_gives_no_pairs():
    c = load_config(config(None))
    assert c["images"]["synthetic"]["corner_pairs"] == 0
    assert corner_pairs(c) == []
    assert not any(parse_corner_id(i) for i in image_ids(c))
    assert load_dataset(c).samples == load_dataset(load_config(config(0))).samples


def test_ids_are_valid_and_paired():
    c = load_config(config(3))
    assert corner_pairs(c) == [("corner_000_a", "corner_000_b"), ("corner_001_a", "corner_001_b"),
                               ("corner_002_a", "corner_002_b")]
    ids = [i for p in pair_ids(1200) for i in p]
    assert len(set(ids)) == len(ids)
    assert ids[-2:] == ["corner_1199_a", "corner_1199_b"]
    for k, i in enumerate(ids):
        assert ID.match(i) and WILDCARD.fullmatch(i)
        assert parse_corner_id(i) == (k // 2, "ab"[k % 2])
    for other in ("corner_01_a", "corner_0001_a", "corner_001_c", "corner_001", "square_only"):
        assert parse_corner_id(other) is None


def test_pair_i_is_the_same_whatever_the_count():
    few, many = load_config(config(2)), load_config(config(25))
    assert corner_pairs(many)[:2] == corner_pairs(few)
    for a, b in corner_pairs(few):
        for i in (a, b):
            assert scene_spec(i, 0) == scene_spec(i, 0)
    assert corner_pair(0, 7) == corner_pair(0, 7)
    # the seed changes the pairs, the index alone picks one
    assert corner_pair(0, 7) != corner_pair(1, 7)
    assert corner_pair(0, 7) != corner_pair(0, 8)
    assert len({corner_pair(0, i).corner for i in range(N)}) == N


def test_shapes_and_geometry():
    counts, labels, colours = set(), set(), set()
    for i in range(N):
        p = corner_pair(0, i)
        counts.add(len(p.others))
        labels.add(p.corner.label)
        colours.add(p.corner.colour)
        assert p.a == (p.corner, *p.others) and p.b == p.others
        assert inside(p.corner.box, (0, 0, 0.5, 0.5))
        for s in p.others:
            assert inside(s.box, (0, 0, 1, 1))
            assert disjoint(s.box, (0, 0, 0.5, 0.5)), (i, s)
        for size in SIZES:
            boxes = [s.pixel_box(size) for s in p.a]
            assert inside(boxes[0], (0, 0, size / 2, size / 2)), (i, size, boxes[0])
            assert boxes[0][0] < boxes[0][2] and boxes[0][1] < boxes[0][3]
            for k, b in enumerate(boxes[1:]):
                assert disjoint(b, (0, 0, size / 2, size / 2)), (i, size, b)
                assert all(disjoint(b, o) for o in boxes[k + 2:]), (i, size, boxes)
    assert counts == {1}  # B: one object, A: two
    assert labels == set(SHAPES) and colours <= set(COLOURS)
    assert len(colours) > 3


@pytest.mark.parametrize("size", SIZES)
def test_a_and_b_differ_only_inside_the_corner_box(size):
    for i in range(N):
        a_id, b_id = pair_ids(i + 1)[i]
        a = np.asarray(draw(scene_shapes(a_id, 0), size))
        b = np.asarray(draw(scene_shapes(b_id, 0), size))
        x0, y0, x1, y1 = corner_pair(0, i).corner.pixel_box(size)
        box = np.zeros(a.shape[:2], bool)
        box[y0:y1, x0:x1] = True
        diff = (a != b).any(axis=2)
        assert not diff[~box].any(), (i, size)
        assert diff[box].any(), (i, size)
        assert (b[box] == 0).all()  # nothing else is drawn in the corner box of B


def test_annotations_list_the_corner_object_for_a_only(tmp_path):
    p = corner_pair(3, 5)
    a_id, b_id = p.ids
    assert (a_id, b_id) == ("corner_005_a", "corner_005_b")
    for image_id, shapes in ((a_id, p.a), (b_id, p.b)):
        png, ann = tmp_path / f"{image_id}.png", tmp_path / f"{image_id}.json"
        # as the draw rule does: the shapes come from the rule's params
        jobs.draw_scene(image_id, 96, str(png), str(ann), shapes=scene_spec(image_id, 3))
        got = json.loads(ann.read_text())
        assert got == annotation(image_id, shapes, 96)  # the format of every scene
        assert set(got) == {"image", "width", "height", "objects"}
        assert got["image"] == image_id
        assert all(set(o) == {"label", "colour", "box"} for o in got["objects"])
        assert np.array_equal(np.asarray(draw(shapes, 96)), np.asarray(Image.open(png)))
    a = json.loads((tmp_path / f"{a_id}.json").read_text())["objects"]
    b = json.loads((tmp_path / f"{b_id}.json").read_text())["objects"]
    corner = {"label": p.corner.label, "colour": p.corner.colour, "box": p.corner.pixel_box(96)}
    assert a[0] == corner and corner not in b
    assert a[1:] == b


def test_draw_job_without_shapes_uses_the_seed(tmp_path):
    for seed in (0, 4):
        png, ann = tmp_path / f"{seed}.png", tmp_path / f"{seed}.json"
        jobs.draw_scene("corner_002_a", 48, str(png), str(ann), seed=seed)
        assert json.loads(ann.read_text()) == annotation("corner_002_a", corner_pair(seed, 2).a, 48)


def test_expected_answers_yes_no():
    data = load_dataset(load_config(config(3)))
    exp = data.expected["top_left"]
    for a, b in corner_pairs(load_config(config(3))):
        assert exp[a] == "yes" and exp[b] == "no"
    assert exp["triangle_topleft"] == "yes" and exp["square_only"] == "no"  # the config's own stay
    # top_left is asked of every pair image, though its images list names only the named scenes
    asked = {s.image for s in data.samples if s.question == "top_left"}
    assert {i for p in corner_pairs(load_config(config(3))) for i in p} < asked
    # other questions keep their images lists
    assert not any(parse_corner_id(s.image) for s in data.samples if s.question != "top_left")
    assert all(data.images[i].annotation == f"results/images/{i}.json" for i in asked)


def test_questions_without_images_list_cover_the_pairs():
    c = load_config(config(1, everything={"text": "What is this?"}))
    assert {"corner_000_a", "corner_000_b"} <= set(question_images(c, "everything"))
    assert {"corner_000_a", "corner_000_b"} <= {s.image for s in samples(c) if s.question == "everything"}
    assert "everything" not in load_dataset(c).expected


def test_no_top_left_question_means_no_expected_answers():
    c = config(2)
    c["questions"].pop("top_left")
    data = load_dataset(load_config(c))
    assert "top_left" not in data.expected
    assert "corner_000_a" in data.images


def test_expected_answers_in_the_config_must_agree():
    c = config(2)
    c["questions"]["top_left"]["expected"]["corner_001_a"] = "Yes"
    load_config(c)
    c["questions"]["top_left"]["expected"]["corner_001_b"] = "yes"
    with pytest.raises(ConfigError, match=r"questions\.top_left\.expected\.corner_001_b: 'yes' contradicts"):
        load_config(c)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"images\.synthetic\.corner_pairs"):
        load_config(config(-1))
    c = config(2)
    c["images"]["files"] = {"corner_001_b": {"path": "x.png"}}
    with pytest.raises(ConfigError, match=r"images\.files\.corner_001_b: id is also a synthetic scene"):
        load_config(c)
    c = config(1)
    c["questions"]["shape"]["images"].append("corner_001_a")  # beyond the count
    with pytest.raises(ConfigError, match=r"unknown image 'corner_001_a'"):
        load_config(c)
