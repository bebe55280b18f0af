"""POPE-style questions: balance, the three negative strategies on a hand-built dataset, seeds, COCO
files and the synthetic scenes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from vlmattn.datasets import read_coco
from vlmattn.images.synthetic import DEFAULT_SCENES
from vlmattn.pope import coco_object_lists, pope_questions, question_text, scene_object_lists

# dog is in 4 images, cat in 3, ball in 2; bone co-occurs with dog only; apple is seen once, with cat
DATA = {
    "a.jpg": ["dog", "ball", "bone"],
    "b.jpg": ["dog", "cat"],
    "c.jpg": ["cat", "apple", "dog"],
    "d.jpg": ["dog", "ball", "cat"],
    "e.jpg": ["kite"],
}


@pytest.mark.parametrize("strategy", ["random", "popular", "adversarial"])
def test_balanced_and_truthful(strategy):
    qs = pope_questions(DATA, strategy=strategy, per_image=2, seed=1)
    assert len(qs) == 4 * 4  # e.jpg has one object, fewer than per_image
    for img in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        mine = [q for q in qs if q.image == img]
        assert [q.answer for q in mine] == ["yes", "no", "yes", "no"]
        assert [q.object for q in mine if q.answer == "yes"] == DATA[img][:2]
        negatives = [q.object for q in mine if q.answer == "no"]
        assert not set(negatives) & set(DATA[img]) and len(set(negatives)) == 2


def test_popular_and_adversarial_choices():
    popular = pope_questions(DATA, strategy="popular", per_image=1)
    # a.jpg holds dog: the most frequent absent object is cat; e.jpg (kite) gets dog
    assert {q.image: q.object for q in popular if q.answer == "no"} == {
        "a.jpg": "cat", "b.jpg": "ball", "c.jpg": "ball", "d.jpg": "bone", "e.jpg": "dog"}
    adversarial = pope_questions(DATA, strategy="adversarial", per_image=1)
    # dog co-occurs with cat (3 images), ball (2), bone (1), apple (1); kite with nothing (random fallback)
    neg = {q.image: q.object for q in adversarial if q.answer == "no"}
    assert neg["a.jpg"] == "cat" and neg["b.jpg"] == "ball" and neg["d.jpg"] == "bone"
    assert neg["c.jpg"] == "ball"  # cat co-occurs with dog (3), apple, ball: dog and apple are present
    assert neg["e.jpg"] != "kite"


def test_seeds_and_image_draws():
    a = pope_questions(DATA, strategy="random", per_image=1, seed=0)
    assert a == pope_questions(DATA, strategy="random", per_image=1, seed=0)
    draws = {tuple(q.object for q in pope_questions(DATA, strategy="random", per_image=1, seed=s)) for s in range(20)}
    assert len(draws) > 1
    two = pope_questions(DATA, strategy="popular", per_image=1, n_images=2, seed=3)
    assert len({q.image for q in two}) == 2
    with pytest.raises(ValueError, match=r"n_images must lie in 1 … 5"):
        pope_questions(DATA, strategy="popular", per_image=1, n_images=6)
    with pytest.raises(ValueError, match="strategy must be one of"):
        pope_questions(DATA, strategy="hard")


def test_question_text_article():
    assert question_text("apple") == "Is there an apple in the image?"
    assert question_text("dining table") == "Is there a dining table in the image?"


def test_from_coco_file(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "x/one.jpg"}, {"id": 2, "file_name": "two.jpg"}],
            "categories": [{"id": 7, "name": "person"}, {"id": 8, "name": "umbrella"}, {"id": 9, "name": "car"}],
            "annotations": [{"image_id": 1, "category_id": 8, "bbox": [0, 0, 2, 2]},
                            {"image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2]},
                            {"image_id": 1, "category_id": 8, "bbox": [3, 3, 1, 1]},
                            {"image_id": 2, "category_id": 9, "bbox": [0, 0, 5, 5]}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    lists = coco_object_lists(read_coco("a.json", tmp_path))
    assert lists == {"one.jpg": ["umbrella", "person"], "two.jpg": ["car"]}
    qs = pope_questions(lists, strategy="popular", per_image=1)
    assert [(q.image, q.object, q.answer) for q in qs] == [
        ("one.jpg", "umbrella", "yes"), ("one.jpg", "car", "no"), ("two.jpg", "car", "yes"),
        ("two.jpg", "umbrella", "no")]


def test_from_synthetic_scenes():
    lists = scene_object_lists(DEFAULT_SCENES)
    qs = pope_questions(lists, strategy="adversarial", per_image=1, seed=0)
    # three_shapes holds every shape: no negative exists for it
    assert {q.image for q in qs} == set(lists) - {"three_shapes"}
    assert Counter(q.answer for q in qs) == {"yes": len(lists) - 1, "no": len(lists) - 1}
    for q in qs:
        assert (q.object in lists[q.image]) == (q.answer == "yes")
    coloured = scene_object_lists(DEFAULT_SCENES, colours=True)
    assert coloured["triangle_topleft"] == ["white triangle", "red square"]
    assert len(pope_questions(coloured, strategy="popular", per_image=1)) == 2 * len(coloured)
