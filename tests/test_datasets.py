"""Sample sheets and COCO boxes: parsing, derived ids, and one-line errors naming the file and row."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from vlmattn.config import load_dataset
from vlmattn.datasets import derive_image_id, derive_question_id
from vlmattn.errors import InputError
from vlmattn.workflow import load_config

ID = re.compile(r"^[A-Za-z0-9]+([-_][A-Za-z0-9]+)*$")
MODELS = {"a": {"family": "llava", "path": "x"}, "b": {"family": "llava", "path": "y"}}


def config(**extra) -> dict:
    return {"questions": {"shape": {"text": "What shape is in the image?", "images": []}},
            "images": {"synthetic": {"scenes": []}}, "models": MODELS, **extra}


def write_images(folder, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", size, "red").save(folder / n)


def coco(images, annotations, categories=({"id": 1, "name": "dog"},)):
    return {"images": list(images), "annotations": list(annotations), "categories": list(categories)}


@pytest.mark.parametrize("name, expected", [
    ("img_01.png", "img_01"), ("my photo (1).JPG", "my_photo_1"), ("a--b__c.png", "a_b_c"), ("x.y.z.png", "x_y_z"),
])
def test_derived_image_ids(name, expected):
    assert derive_image_id(name) == expected
    assert ID.match(derive_image_id(name))


def test_derived_ids_are_wildcard_safe_and_stable():
    assert ID.match(derive_image_id("猫.png")) and derive_image_id("猫.png") == derive_image_id("猫.png")
    assert derive_image_id("猫.png") != derive_image_id("犬.png")
    q = derive_question_id("  What colour is the car?  ")
    assert q.startswith("what_colour_is_the_car_") and ID.match(q)
    assert q == derive_question_id("What colour is the car?")
    assert derive_question_id("What colour is the car?") != derive_question_id("What colour is the cat?")
    assert ID.match(derive_question_id("¿Qué?"))


def test_sheet_rows_become_samples_on_every_model(tmp_path):
    write_images(tmp_path / "data" / "img", ["cat.png", "dog 2.png"])
    (tmp_path / "data" / "sheet.tsv").write_text(
        "image\tquestion\tquestion_id\texpected\timage_id\n"
        "img/cat.png\tWhat colour is it?\t\tred\t\n"
        "img/dog 2.png\t\tshape\tsquare\tdoggy\n"
        "img/cat.png\tHow many?\tcount\t\t\n")
    data = load_dataset(load_config(config(sheets=[{"path": "data/sheet.tsv"}]), tmp_path), tmp_path)
    qid = derive_question_id("What colour is it?")
    assert data.questions[qid] == "What colour is it?" and data.questions["count"] == "How many?"
    assert data.images["cat"].path == "data/img/cat.png" and data.images["doggy"].path == "data/img/dog 2.png"
    assert data.expected == {qid: {"cat": "red"}, "shape": {"doggy": "square"}}
    names = sorted((s.model, s.name) for s in data.samples)
    assert names == sorted((m, n) for m in MODELS for n in (f"cat__{qid}", "doggy__shape", "cat__count"))
    assert data.record(next(s for s in data.samples if s.name == "doggy__shape"))["question"] == (
        "What shape is in the image?")


def test_csv_sheet_and_coco_boxes(tmp_path):
    write_images(tmp_path / "img", ["a.png", "b.png"])
    (tmp_path / "s.csv").write_text('image,question\nimg/a.png,"Where is the dog, if any?"\nimg/b.png,Any dog?\n')
    (tmp_path / "coco.json").write_text(json.dumps(coco(
        [{"id": 7, "file_name": "val/a.png", "width": 40, "height": 30}, {"id": 8, "file_name": "b.png"}],
        [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 5]},
         {"id": 2, "image_id": 7, "category_id": 1, "bbox": [30.5, 0, 10.4, 30]}])))
    data = load_dataset(load_config(config(sheets=[{"path": "s.csv", "annotations": "coco.json"}]), tmp_path), tmp_path)
    # the second box overhangs by 0.9 px (within the slack) and is clipped to the image
    assert data.images["a"].objects == [{"label": "dog", "colour": "", "box": [2.0, 3.0, 12.0, 8.0]},
                                        {"label": "dog", "colour": "", "box": [30.5, 0.0, 40.0, 30.0]}]
    assert data.images["b"].objects == []


def sheet_case(tmp_path, text, annotations=None, name="s.tsv"):
    write_images(tmp_path / "img", ["a.png", "b.png"])
    (tmp_path / "img" / "zero.png").write_bytes(b"")
    (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    spec = {"path": name}
    if annotations is not None:
        (tmp_path / "coco.json").write_text(annotations if isinstance(annotations, str) else json.dumps(annotations))
        spec["annotations"] = "coco.json"
    return load_dataset(load_config(config(sheets=[spec]), tmp_path), tmp_path)


ONE_DOG = coco([{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
               [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}])


@pytest.mark.parametrize("text, annotations, message", [
    ("question\nWhy?\n", None, "sheet s.tsv: missing column 'image'"),
    ("image\texpected\nimg/a.png\tyes\n", None, "sheet s.tsv: missing column 'question' or 'question_id'"),
    ("image\tquestion\tanswer\nimg/a.png\tWhy?\tyes\n", None, "sheet s.tsv: unknown column 'answer'"),
    ("image\tquestion\n", None, "sheet s.tsv: no samples (empty sheet)"),
    ("", None, "sheet s.tsv: no samples (empty sheet)"),
    ("image\tquestion\nimg/a.png\n", None, "sheet s.tsv line 2: 1 fields, the header has 2"),
    ("image\tquestion\nimg/a.png\t\n", None, "sheet s.tsv line 2: give a question or a question_id"),
    ("image\tquestion_id\nimg/a.png\tbad id\n", None,
     "sheet s.tsv line 2: column 'question_id': 'bad id' does not match"),
    ("image\tquestion_id\nimg/a.png\tnope\n", None, "sheet s.tsv line 2: unknown question id 'nope'"),
    ("image\tquestion\nimg/a.png\tWhy?\nimg/b.png\tHow?\nimg/a.png\tWhy?\n", None,
     "sheet s.tsv line 4: duplicate sample a__why_"),
    ("image\tquestion\timage_id\nimg/a.png\tWhy?\tx\nimg/b.png\tWhy?\tx\n", None,
     "sheet s.tsv line 3: duplicate image id 'x': line 2 gives it to img/a.png"),
    ("image\tquestion\tquestion_id\nimg/a.png\tWhy?\tq\nimg/b.png\tHow?\tq\n", None,
     "sheet s.tsv line 3: question id 'q' has another text on line 2"),
    ("image\tquestion\tquestion_id\nimg/a.png\tWhy?\tshape\n", None,
     "sheet s.tsv line 2: question id 'shape' already has the text 'What shape is in the image?'"),
    ("image\tquestion\nimg/a.png\tWhy?\nimg/missing.png\tWhy?\n", None,
     "sheet s.tsv line 3: image file not found: img/missing.png"),
    ("image\tquestion\nimg/zero.png\tWhy?\n", None, "sheet s.tsv line 2: not an image file: img/zero.png"),
    ("image\tquestion\nimg/a.png\tWhy?\n".encode() + b"img/b.png\tCaf\xe9?\n", None,
     "sheet s.tsv line 3: not UTF-8 text (byte 0xe9)"),
    ("image\tquestion\nimg/a.png\tWhy?\n", coco([{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
                                                [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [30, 0, 20, 5]}]),
     "annotations coco.json annotations[0]: box [30.0, 0.0, 50.0, 5.0] is outside the image img/a.png (40x30)"),
    ("image\tquestion\nimg/a.png\tWhy?\n",
     {**ONE_DOG, "annotations": [{"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1]}]},
     "annotations coco.json annotations[0]: unknown category_id 9"),
    ("image\tquestion\nimg/a.png\tWhy?\n",
     {**ONE_DOG, "annotations": [{"image_id": 4, "category_id": 1, "bbox": [0, 0, 1, 1]}]},
     "annotations coco.json annotations[0]: unknown image_id 4"),
    ("image\tquestion\nimg/a.png\tWhy?\n",
     {**ONE_DOG, "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1]}]},
     "annotations coco.json annotations[0]: bbox must be [x, y, w, h] with w, h >= 0"),
    ("image\tquestion\nimg/a.png\tWhy?\n", {**ONE_DOG, "images": [{"id": 1, "file_name": "a.png", "width": 80,
                                                                   "height": 60}]},
     "annotations coco.json images[0]: a.png is 80x60 there but 40x30 on disk"),
    ("image\tquestion\nimg/a.png\tWhy?\n", {"images": []}, "annotations coco.json: missing list 'annotations'"),
    ("image\tquestion\nimg/a.png\tWhy?\n", "{not json", "annotations coco.json: not valid JSON (line 1"),
])
def test_bad_sheet_or_annotations_give_one_line_naming_file_and_row(tmp_path, text, annotations, message):
    with pytest.raises(InputError) as e:
        sheet_case(tmp_path, text, annotations)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(message), msg


def test_sheet_file_kinds(tmp_path):
    with pytest.raises(InputError, match=r"^sheet s\.xlsx: expected a \.tsv or \.csv file$"):
        sheet_case(tmp_path, "x", name="s.xlsx")
    with pytest.raises(InputError, match=r"^sheet gone\.tsv: file not found$"):
        load_dataset(load_config(config(sheets=[{"path": "gone.tsv"}]), tmp_path), tmp_path)


def test_sheet_image_id_may_not_rename_a_config_image(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"])
    cfg = config(images={"synthetic": {"scenes": []}, "files": {"a": {"path": "b.png"}}},
                 sheets=[{"path": "s.tsv"}])
    (tmp_path / "s.tsv").write_text("image\tquestion\na.png\tWhy?\n")
    with pytest.raises(InputError, match=r"^sheet s\.tsv line 2: duplicate image id 'a', already b\.png$"):
        load_dataset(load_config(cfg, tmp_path), tmp_path)
