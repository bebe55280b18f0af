"""A sample sheet with COCO boxes, mixed with a synthetic scene, runs end to end."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.pipeline import TINY_CONFIG, snakemake, write_config
from vlmattn.datasets import derive_question_id
from vlmattn.images.synthetic import Shape, draw

pytestmark = pytest.mark.pipeline
SCENES = {  # file name -> shapes (fractions of the side)
    "cat 01.png": (Shape("triangle", "white", (0.05, 0.05, 0.35, 0.35)),),
    "dog_02.png": (Shape("square", "red", (0.5, 0.5, 0.9, 0.8)), Shape("circle", "blue", (0.1, 0.6, 0.3, 0.8))),
}
SIZE = 80


def test_sheet_with_coco_boxes_end_to_end(tmp_path):
    (tmp_path / "data/img").mkdir(parents=True)
    categories = {"triangle": 1, "square": 2, "circle": 3}
    images, annotations = [], []
    for k, (name, shapes) in enumerate(SCENES.items()):
        draw(shapes, SIZE).save(tmp_path / "data/img" / name)
        images.append({"id": 100 + k, "file_name": f"val/{name}", "width": SIZE, "height": SIZE})
        for s in shapes:
            x0, y0, x1, y1 = s.pixel_box(SIZE)
            annotations.append({"id": len(annotations), "image_id": 100 + k, "category_id": categories[s.label],
                                "bbox": [x0, y0, x1 - x0, y1 - y0]})
    (tmp_path / "data/coco.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in categories.items()]}))
    (tmp_path / "data/samples.csv").write_text(
        "image,question,question_id,expected\n"
        "img/cat 01.png,Is there a triangle?,,yes\n"
        "img/dog_02.png,Is there a triangle?,,no\n"
        "img/dog_02.png,,top_left,no\n")
    cfg = {**TINY_CONFIG, "sheets": [{"path": "data/samples.csv", "annotations": "data/coco.json"}],
           "metrics": {"spatial": {}}}
    cfg["images"] = {"synthetic": {"size": 64, "scenes": ["triangle_topleft"]}}
    cfg["questions"] = {"top_left": {"text": "Is there anything in the top left corner?",
                                     "expected": {"triangle_topleft": "yes"}}}
    write_config(tmp_path, cfg)
    snakemake(tmp_path, "--cores", "2")

    q = derive_question_id("Is there a triangle?")
    answers = pd.read_csv(tmp_path / "results/tables/answers.csv", dtype=str, keep_default_na=False)
    got = {(r.image, r.question): r.expected for r in answers.itertuples()}
    assert got == {("cat_01", q): "yes", ("dog_02", q): "no", ("dog_02", "top_left"): "no",
                   ("triangle_topleft", "top_left"): "yes"}
    with h5py.File(tmp_path / "results/attention/tiny/dog_02__top_left.h5") as f:
        assert [x.decode() for x in f["image/labels"][()]] == ["square", "circle"]
        np.testing.assert_array_equal(f["image/boxes"][()], [s.pixel_box(SIZE) for s in SCENES["dog_02.png"]])
        assert f.attrs["image_path"] == "data/img/dog_02.png"
    spatial = pd.read_parquet(tmp_path / "results/tables/spatial")
    objects = spatial[spatial.region_kind == "object"].groupby("image")["region"].unique()
    assert sorted(objects["dog_02"]) == ["circle", "square"] and list(objects["cat_01"]) == ["triangle"]
    assert set(spatial["image"]) == {"cat_01", "dog_02", "triangle_topleft"}
