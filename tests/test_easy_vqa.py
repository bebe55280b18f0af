"""easy-VQA, a dataset brought as files: the converter's sheets and boxes, and configs/easy_vqa.yaml at a
small budget (training on the train sheet, attention on test samples, online pruning on the test split)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests import REPO
from tests.pipeline import snakemake, write_config
from vlmattn import easy_vqa
from vlmattn.datasets import read_sheet

easy = pytest.importorskip("easy_vqa")


def test_answer_types_and_boxes():
    assert easy_vqa.answer_type("what shape is in the image?", "circle") == "shape"
    assert easy_vqa.answer_type("what color is the shape?", "teal") == "color"
    assert easy_vqa.answer_type("is there a red shape?", "no") == "yes_no"
    assert easy_vqa.answer_type("is no red shape present?", "yes") == "yes_no_negated"
    assert easy_vqa.answer_type("does the image not contain a circle?", "no") == "yes_no_negated"
    im = Image.new("RGB", (64, 64), (248, 234, 230))
    im.paste((10, 20, 200), (5, 7, 25, 30))
    assert easy_vqa.foreground_box(im) == [5.0, 7.0, 25.0, 30.0]


def test_converter_writes_valid_sheets(tmp_path):
    easy_vqa.main([str(tmp_path), "--train", "50", "--test", "20", "--samples", "5", "--seed", "1"])
    train, test = read_sheet("train.tsv", tmp_path), read_sheet("test.tsv", tmp_path)
    assert len(train.rows) == 50 and len(test.rows) == 20 and len(read_sheet("samples.tsv", tmp_path).rows) == 5
    texts, answers, ids = easy.get_test_questions()
    got = {(r.image_id, r.question): r.expected for r in test.rows}
    assert all(got[(f"test_{i}", t)] == a for t, a, i in zip(texts, answers, ids, strict=True)
               if (f"test_{i}", t) in got)
    coco = json.loads((tmp_path / "test.json").read_text())
    assert {im["file_name"] for im in coco["images"]} == {r.image_path.split("/")[-1] for r in test.rows}
    for ann in coco["annotations"]:  # the box holds every non-background pixel
        a = np.asarray(Image.open(tmp_path / "images/test" / f"{ann['image_id']}.png").convert("RGB"))
        x, y, w, h = (int(v) for v in ann["bbox"])
        fg = (a != a[0, 0]).any(-1)
        assert fg.sum() == fg[y:y + h, x:x + w].sum() > 0
    again = tmp_path / "again"
    easy_vqa.main([str(again), "--train", "50", "--test", "20", "--samples", "5", "--seed", "1"])
    assert (again / "test.tsv").read_bytes() == (tmp_path / "test.tsv").read_bytes()
    with pytest.raises(SystemExit, match="--test must lie in 1 … 9673"):
        easy_vqa.main([str(tmp_path / "bad"), "--test", "0"])


@pytest.mark.pipeline
def test_config_example_at_a_small_budget(tmp_path):
    easy_vqa.main([str(tmp_path / "data/easy_vqa"), "--train", "400", "--test", "40", "--samples", "4"])
    cfg = yaml.safe_load((REPO / "configs/easy_vqa.yaml").read_text())
    cfg["results"] = "results"
    spec = cfg["models"]["easy_vqa_llava"]["build"]["spec"]
    spec.update(steps=40, eval_every=40, heldout_n=16, batch_size=16)
    cfg["pruning"]["online"].update(n_items=8, chunks=1)
    write_config(tmp_path, cfg)
    snakemake(tmp_path, "--cores", "2")
    report = pd.read_csv(tmp_path / "results/tables/training_easy_vqa_llava.csv")
    assert {"shape", "color", "yes_no", "yes_no_negated", "all_types"} <= set(report["question_type"])
    answers = pd.read_csv(tmp_path / "results/tables/answers.csv")
    assert len(answers) == 4 and set(answers["model"]) == {"easy_vqa_llava"}
    published = pd.read_csv(tmp_path / "results/tables/pruning_published.csv")
    assert (published["n_items"] == 8).all() and {"fastv", "pyramiddrop", "sparsevlm"} <= set(published["scorer"])
    spatial = pd.read_parquet(tmp_path / "results/tables/spatial")
    assert (spatial["region_kind"] == "object").any()  # the converter's boxes reached the cache
