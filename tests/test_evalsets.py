"""Evaluation sets from a sample sheet and from POPE questions on COCO annotations, their one-line
errors, and an online run scored by a fractional rule (VQA accuracy) through to the ablation table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlmattn.errors import InputError
from vlmattn.pruning import evalset
from vlmattn.pruning import stats as pstats
from vlmattn.pruning.evaluate import evaluate


def write_images(folder, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", size, (40 * i, 100, 200)).save(folder / name)


COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
                   {"id": 3, "file_name": "c.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "apple"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                        {"image_id": 2, "category_id": 2, "bbox": [5, 5, 10, 10]},
                        {"image_id": 3, "category_id": 3, "bbox": [1, 2, 3, 4]},
                        {"image_id": 3, "category_id": 1, "bbox": [20, 10, 5, 5]}]}


@pytest.fixture
def sheet(tmp_path):
    write_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    (tmp_path / "coco.json").write_text(json.dumps(COCO))
    (tmp_path / "set.tsv").write_text(
        "image\tquestion\tanswers\tanswer_type\tn_options\n"
        "img/a.png\tWhat animal is it?\tdog|dog|puppy\tother\t\n"
        "img/b.png\tIs there a cat?\tyes\tyes_no\t\n"
        "img/c.png\tWhich is it? A) dog B) apple\tB\t\t2\n")
    return tmp_path


def test_sheet_items(sheet):
    items = evalset.sheet_set("set.tsv", annotations="coco.json", base_dir=sheet)
    assert [it.index for it in items] == [0, 1, 2]
    assert items[0].answers == ("dog", "dog", "puppy") and items[0].answer == "dog" and items[0].qtype == "other"
    assert items[1].answers == ("yes",) and items[2].qtype == "all" and items[2].n_options == 2
    np.testing.assert_allclose(items[0].boxes, [[0, 0, 10, 10]])
    np.testing.assert_allclose(items[2].boxes, [[1, 2, 4, 6], [20, 10, 25, 15]])
    assert items[0].image.size == (40, 30)
    two = evalset.evaluation_items({"kind": "sheet", "sheet": "set.tsv", "annotations": None}, n_items=2, seed=0,
                                   base_dir=sheet)
    assert [it.question for it in two] == ["What animal is it?", "Is there a cat?"] and len(two[0].boxes) == 0
    with pytest.raises(InputError, match="n_items: 4 items asked for, the sheet set holds 3"):
        evalset.evaluation_items({"kind": "sheet", "sheet": "set.tsv", "annotations": None}, n_items=4, seed=0,
                                 base_dir=sheet)


def test_sheet_errors_name_the_line(sheet):
    (sheet / "bad.tsv").write_text("image\tquestion\n" "img/a.png\tWhat is it?\n")
    with pytest.raises(InputError, match=r"bad.tsv line 2: an evaluation item needs a reference answer"):
        evalset.sheet_set("bad.tsv", base_dir=sheet)
    (sheet / "gap.tsv").write_text("image\tquestion\tanswers\n" "img/a.png\tWhat?\tdog||cat\n")
    with pytest.raises(InputError, match=r"gap.tsv line 2: column 'answers': an empty answer"):
        evalset.sheet_set("gap.tsv", base_dir=sheet)
    (sheet / "noimg.tsv").write_text("image\tquestion\texpected\n" "img/z.png\tWhat?\tdog\n")
    with pytest.raises(InputError, match=r"noimg.tsv line 2: cannot read image img/z.png"):
        evalset.sheet_set("noimg.tsv", base_dir=sheet)


def test_pope_items(sheet):
    items = evalset.pope_set("coco.json", "img", strategy="popular", per_image=1, n_images=None, seed=0,
                             base_dir=sheet)
    assert [(it.question, it.answer) for it in items[:2]] == [("Is there a dog in the image?", "yes"),
                                                              ("Is there a cat in the image?", "no")]
    assert len(items) == 6 and {it.qtype for it in items} == {"popular"}
    np.testing.assert_allclose(items[1].boxes, [[0, 0, 10, 10]])  # the image's own objects
    with pytest.raises(InputError, match="image a.png is not in elsewhere"):
        evalset.pope_set("coco.json", "elsewhere", strategy="random", per_image=1, n_images=None, seed=0,
                         base_dir=sheet)


def test_online_rows_scored_by_vqa_accuracy(sheet, loaded):
    lm = loaded("llava")
    items = evalset.sheet_set("set.tsv", base_dir=sheet)[:1]
    rows = evaluate(lm, items, prune_layer=1, budgets=[4], max_new_tokens=2, head_strategies=["variance"],
                    query_strategies=["last_token"], n_draws=1, scoring="vqav2", show_progress=False)
    assert rows["score"].between(0, 1).all()
    from vlmattn.scoring import vqa_accuracy, vqa_normalise

    assert (rows["answer"] == rows["answer"].map(vqa_normalise)).all()
    assert (rows["score"] == [vqa_accuracy(a, ["dog", "dog", "puppy"]) for a in rows["answer"]]).all()
    table = pstats.accuracy_table(rows, fractional=True)
    assert set(table["n_items"]) == {1}
    assert np.allclose(table["accuracy"], rows.loc[rows["study"] != "unpruned"].groupby("scorer")["score"].mean()
                       .reindex(table["scorer"]).to_numpy())


def test_fractional_table_planted_effect():
    """A scorer whose VQA accuracy falls by 0.3 on every item against one that keeps it."""
    n = 40
    rng = np.random.default_rng(0)
    base = rng.choice([0.6, 0.9, 1.0], n)
    rows = [dict(item=i, mode="none", study="unpruned", scorer="unpruned", budget=9, kept=1.0, average_tokens=9.0,
                 correct=b == 1, answer="x", recall=np.nan, flops_fraction=1.0, score=b) for i, b in enumerate(base)]
    for name, drop in (("bad", 0.3), ("same", 0.0)):
        rows += [dict(item=i, mode="drop", study="published", scorer=name, budget=3, kept=1 / 3, average_tokens=5.0,
                      correct=b - drop == 1, answer="x", recall=np.nan, flops_fraction=0.5, score=b - drop)
                 for i, b in enumerate(base)]
    t = pstats.accuracy_table(pd.DataFrame(rows), fractional=True).set_index("scorer")
    assert t.loc["bad", "accuracy"] == pytest.approx(base.mean() - 0.3)
    assert t.loc["bad", "n_lost"] == n and t.loc["bad", "p"] < 1e-3
    assert t.loc["same", "p"] == 1.0 and t.loc["same", "n_lost"] == 0
    assert t.loc["bad", "ci_low"] < t.loc["bad", "accuracy"] < t.loc["bad", "ci_high"]
