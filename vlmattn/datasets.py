"""Datasets brought as files: sample sheets (TSV or CSV) and COCO-format ground-truth boxes.

A **sample sheet** has a header line and one (image, question) sample per row; each row is
validated against ``vlmattn/schemas/samplesheet.schema.yaml``:

=============  ================================================================================
``image``      image file, relative to the sheet's folder (or absolute); required
``question``   question text
``question_id`` the text's id; alone, the id of a question in config ``questions``
``image_id``   image id (default: derived from the file name)
``expected``   expected answer
``answers``    reference answers, separated by ``|`` (evaluation sets: VQA's ten human answers);
               the first is the answer of one-answer scoring rules; defaults to ``expected``
``answer_type`` the answer's kind (evaluation sets: accuracy per kind), e.g. ``yes_no``
``n_options``  number of options A, B, … of a multiple-choice question (scoring rule ``choice``)
=============  ================================================================================

A row needs ``question`` or ``question_id``. Empty cells count as absent; cells are stripped of
surrounding white space. Derived ids are stable (a function of the file name or of the text alone)
and wildcard-safe (``[A-Za-z0-9]+([-_][A-Za-z0-9]+)*``, see :func:`derive_image_id` and
:func:`derive_question_id`).

**COCO annotations** (``images[]`` with ``id, file_name`` and optionally ``width, height``;
``categories[]`` with ``id, name``; ``annotations[]`` with ``image_id, category_id`` and
``bbox = [x, y, w, h]`` in pixels) give a sheet image the boxes of the COCO image with the same
file name (base name), as objects ``{label: category name, colour: "", box: [x, y, x + w, y + h]}``.
A box may overhang the image by at most :data:`BOX_SLACK` pixels (float rounding in public
annotation files) and is then clipped to it; beyond that it is an error.

Every problem is raised as a one-line :class:`~vlmattn.errors.InputError` naming the file and the
line (sheets; the header is line 1) or the entry (COCO).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

from .errors import InputError

SHEET_SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "samplesheet.schema.yaml"
SEPARATORS = {".tsv": "\t", ".tab": "\t", ".csv": ","}
BOX_SLACK = 1.0  # pixels a COCO box may overhang the image before it is an error
_ID_RUN = re.compile(r"[A-Za-z0-9]+")


def derive_image_id(path: str) -> str:
    """Image id from a file name: the stem's runs of ASCII letters and digits joined by ``_``
    (``"img 01 (copy).JPG"`` → ``img_01_copy``); ``image_<8 hex of the name's SHA-256>`` when the
    stem has none."""
    stem = Path(path).stem
    runs = _ID_RUN.findall(stem)
    return "_".join(runs) if runs else "image_" + hashlib.sha256(stem.encode()).hexdigest()[:8]


def derive_question_id(text: str) -> str:
    """Question id from its text: its first six words (ASCII letters and digits, lower case) and 6
    hex digits of the SHA-256 of the stripped text, e.g. ``what_colour_is_the_car_3f9a1c``."""
    text = text.strip()
    words = _ID_RUN.findall(text.lower())[:6]
    return "_".join([*words, hashlib.sha256(text.encode()).hexdigest()[:6]])


@dataclass(frozen=True)
class SheetRow:
    """One validated sheet row. ``image_path`` is the file as the pipeline opens it (the sheet's
    folder joined); ``question`` is None when the row names a config question by id alone."""

    line: int
    image_id: str
    image_path: str
    question_id: str
    question: str | None
    expected: str | None
    answers: tuple[str, ...] = ()
    answer_type: str | None = None
    n_options: int | None = None


@dataclass
class Sheet:
    path: str
    rows: list[SheetRow] = field(default_factory=list)


def _schema() -> dict:
    return yaml.safe_load(SHEET_SCHEMA_PATH.read_text())


def _row_error(validator: jsonschema.protocols.Validator, row: dict) -> str | None:
    """The first schema violation of ``row`` as text naming the column, or None."""
    if not (row.get("question") or row.get("question_id")):
        return "give a question or a question_id"
    error = jsonschema.exceptions.best_match(validator.iter_errors(row))
    if error is None:
        return None
    column = error.absolute_path[0] if error.absolute_path else None
    return f"column {column!r}: {error.message}" if column else error.message


def read_sheet(path: str, base_dir: Path = Path(".")) -> Sheet:
    """Read and validate the sample sheet ``path`` (as configured, relative to ``base_dir``).

    Checks the header (no unknown or repeated column, ``image`` and a question column present), each
    row against the schema, and across rows: one path per image id, one text per question id, no
    sample twice, at least one row. Image files themselves are checked by the caller.
    """
    full = base_dir / path
    sep = SEPARATORS.get(Path(path).suffix.lower())
    if sep is None:
        raise InputError(f"sheet {path}: expected a .tsv or .csv file")
    if not full.is_file():
        raise InputError(f"sheet {path}: file not found")
    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema)
    known = list(schema["properties"])
    sheet = Sheet(path)
    folder = Path(path).parent
    seen_image: dict[str, tuple[str, int]] = {}
    seen_text: dict[str, tuple[str | None, int]] = {}
    seen_sample: dict[tuple[str, str], int] = {}
    raw = full.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"sheet {path} line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x})") from None
    line = 1
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise InputError(f"sheet {path}: no samples (empty sheet)")
        header = [h.strip() for h in header]
        for col in header:
            if col not in known:
                raise InputError(f"sheet {path}: unknown column {col!r} (known: {', '.join(known)})")
            if header.count(col) > 1:
                raise InputError(f"sheet {path}: column {col!r} appears twice")
        if "image" not in header:
            raise InputError(f"sheet {path}: missing column 'image'")
        if "question" not in header and "question_id" not in header:
            raise InputError(f"sheet {path}: missing column 'question' or 'question_id'")
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            where = f"sheet {path} line {line}"
            if len(cells) != len(header):
                raise InputError(f"{where}: {len(cells)} fields, the header has {len(header)}")
            row = {k: v.strip() for k, v in zip(header, cells, strict=True) if v.strip()}
            problem = _row_error(validator, row)
            if problem:
                raise InputError(f"{where}: {problem}")
            image_path = row["image"] if Path(row["image"]).is_absolute() else str(folder / row["image"])
            image_id = row.get("image_id") or derive_image_id(row["image"])
            question = row.get("question")
            question_id = row.get("question_id") or derive_question_id(question)
            if image_id in seen_image and seen_image[image_id][0] != image_path:
                other, at = seen_image[image_id]
                raise InputError(f"{where}: duplicate image id {image_id!r}: line {at} gives it to {other} "
                                 "(set image_id to tell them apart)")
            seen_image.setdefault(image_id, (image_path, line))
            if question_id in seen_text and seen_text[question_id][0] != question:
                raise InputError(f"{where}: question id {question_id!r} has another text on line "
                                 f"{seen_text[question_id][1]}")
            seen_text.setdefault(question_id, (question, line))
            key = (image_id, question_id)
            if key in seen_sample:
                raise InputError(f"{where}: duplicate sample {image_id}__{question_id} (also line {seen_sample[key]})")
            seen_sample[key] = line
            answers = tuple(a.strip() for a in row["answers"].split("|")) if "answers" in row else ()
            if any(not a for a in answers):
                raise InputError(f"{where}: column 'answers': an empty answer between '|' separators")
            answers = answers or ((row["expected"],) if "expected" in row else ())
            n_options = int(row["n_options"]) if "n_options" in row else None
            sheet.rows.append(SheetRow(line, image_id, image_path, question_id, question, row.get("expected"),
                                       answers, row.get("answer_type"), n_options))
    except csv.Error as e:
        raise InputError(f"sheet {path} line {line}: {e}") from None
    if not sheet.rows:
        raise InputError(f"sheet {path}: no samples (empty sheet)")
    return sheet


@dataclass(frozen=True)
class CocoImage:
    """One COCO ``images[]`` entry with its objects (boxes as ``[x0, y0, x1, y1]`` pixels)."""

    index: int
    file_name: str
    width: int | None
    height: int | None
    objects: tuple[tuple[int, dict], ...]  # (annotations[] index, object)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_coco(path: str, base_dir: Path = Path(".")) -> dict[str, CocoImage]:
    """COCO images by base file name, each with its objects; one-line errors for a missing key,
    an annotation of an unknown image or category, or a malformed box."""
    full = base_dir / path
    where = f"annotations {path}"
    if not full.is_file():
        raise InputError(f"{where}: file not found")
    try:
        data = json.loads(full.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{where}: missing list {key!r}")
    categories = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise InputError(f"{where} categories[{i}]: needs 'id' and 'name'")
        categories[c["id"]] = c["name"]
    images, by_id = {}, {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise InputError(f"{where} images[{i}]: needs 'id' and 'file_name'")
        by_id[im["id"]] = (i, im)
    objects: dict[object, list] = {k: [] for k in by_id}
    for i, a in enumerate(data["annotations"]):
        at = f"{where} annotations[{i}]" + (f" (id {a['id']})" if isinstance(a, dict) and "id" in a else "")
        if not isinstance(a, dict):
            raise InputError(f"{at}: expected an object")
        if a.get("image_id") not in by_id:
            raise InputError(f"{at}: unknown image_id {a.get('image_id')!r}")
        if a.get("category_id") not in categories:
            raise InputError(f"{at}: unknown category_id {a.get('category_id')!r}")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)) or box[2] < 0 or box[3] < 0:
            raise InputError(f"{at}: bbox must be [x, y, w, h] with w, h >= 0, got {box!r}")
        x, y, w, h = (float(v) for v in box)
        objects[a["image_id"]].append((i, {"label": categories[a["category_id"]], "colour": "",
                                          "box": [x, y, x + w, y + h]}))
    for image_id, (i, im) in by_id.items():
        name = Path(im["file_name"]).name
        entry = CocoImage(i, im["file_name"], im.get("width"), im.get("height"), tuple(objects[image_id]))
        images[name] = None if name in images else entry  # None: two COCO images share the name
    return images


def coco_objects(coco: dict[str, CocoImage], coco_path: str, image_path: str, size: tuple[int, int]) -> list[dict]:
    """The objects of the COCO image named like ``image_path`` (none when it is not annotated),
    checked against the image's real ``size = (width, height)`` and clipped to it."""
    name = Path(image_path).name
    if name not in coco:
        return []
    entry = coco[name]
    where = f"annotations {coco_path}"
    if entry is None:
        raise InputError(f"{where}: several images are named {name!r}; cannot match {image_path}")
    width, height = size
    if (entry.width, entry.height) != (None, None) and (entry.width, entry.height) != (width, height):
        raise InputError(f"{where} images[{entry.index}]: {entry.file_name} is {entry.width}x{entry.height} "
                         f"there but {width}x{height} on disk ({image_path})")
    out = []
    for i, obj in entry.objects:
        x0, y0, x1, y1 = obj["box"]
        if x0 < -BOX_SLACK or y0 < -BOX_SLACK or x1 > width + BOX_SLACK or y1 > height + BOX_SLACK:
            raise InputError(f"{where} annotations[{i}]: box {[round(v, 2) for v in obj['box']]} is outside "
                             f"the image {image_path} ({width}x{height})")
        box = [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
        out.append({**obj, "box": box})
    return out
