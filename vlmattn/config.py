"""Configuration: JSON-schema validation with defaults, input checks, and the sample list.

Every problem is raised as a one-line :class:`ConfigError` or :class:`InputError` that names the
config key or file.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml
from PIL import Image

from .errors import ConfigError, InputError
from .images import synthetic
from .images.synthetic import CORNER_ANSWERS, CORNER_QUESTION, DEFAULT_SCENES

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def validate(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate a config dict (a copy, with defaults filled in) or raise a one-line ConfigError."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    cfg = copy.deepcopy(config)
    # two passes: defaults inserted by the first are validated by the second
    for _ in range(2):
        error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(cfg))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            message = error.message
            if error.validator == "pattern" and error.schema.get("pattern") == schema["definitions"]["id"]["pattern"]:
                message = (f"{error.instance!r} is not a valid id (letters and digits, joined by single '-' or '_'; "
                           "ids name files and wildcards)")
            elif error.validator == "pattern" and error.schema.get("pattern") == "\\S":
                message = "is empty"
            elif error.validator == "oneOf" and "description" in error.schema:
                message = f"{error.instance!r} is not valid: expected {' '.join(error.schema['description'].split())}"
            raise ConfigError(f"config {where}: {message}")
    return cfg


def metric_defaults(name: str, schema_path: Path = SCHEMA_PATH) -> dict:
    """The block of metric ``name`` as the schema fills it in when it is given as ``{}`` (e.g. the sink
    rule of ``metrics.sinks`` for a config that leaves the sinks metric out)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    if name not in schema["properties"]["metrics"]["properties"]:
        known = ", ".join(schema["properties"]["metrics"]["properties"])
        raise ConfigError(f"metrics.{name}: unknown metric (known: {known})")
    cfg = {"metrics": {name: {}}}
    for _ in range(2):
        for error in _Validator({**schema, "required": []}).iter_errors(cfg):
            raise ConfigError(f"schema defaults of metrics.{name}: {error.message}")
    return cfg["metrics"][name]


def extraction_settings(block: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """The ``extraction`` block ``block`` with the schema's defaults filled in and its ``resources`` left
    out: every setting an extracted file depends on. Raises a one-line ConfigError for a bad block."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    cfg = {"extraction": copy.deepcopy(block)}
    for _ in range(2):
        for error in _Validator({**schema, "required": []}).iter_errors(cfg):
            where = ".".join(str(p) for p in error.absolute_path)
            raise ConfigError(f"config {where}: {error.message}")
    return {k: v for k, v in cfg["extraction"].items() if k != "resources"}


@dataclass(frozen=True)
class Sample:
    model: str
    image: str
    question: str

    @property
    def name(self) -> str:
        return f"{self.image}__{self.question}"


def check_image_file(path: str, key: str, base_dir: Path, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` (as configured, relative to ``base_dir``); raises
    :class:`InputError` naming ``key`` and ``path`` if it is missing, not a readable image (checked
    without decoding it: header, and PNG checksums) or larger than ``max_pixels``."""
    full = base_dir / path
    if not full.is_file():
        raise InputError(f"{key}: image file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(full) as im:
                    size = im.size
                    if size[0] * size[1] <= max_pixels:
                        im.verify()
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001
        raise InputError(f"{key}: not an image file: {path}") from None
    if size[0] * size[1] > max_pixels:
        raise InputError(f"{key}: image {path} is {size[0]}x{size[1]}, more than images.max_pixels = "
                         f"{max_pixels:,} pixels")
    return size


def corner_pairs(cfg: dict) -> list[tuple[str, str]]:
    """Image ids ``[(id_a, id_b), ...]`` of the config's corner pairs (``images.synthetic.corner_pairs``):
    the same scene with (A) and without (B) one object in the top-left quadrant
    (:func:`vlmattn.images.synthetic.corner_pair`)."""
    return synthetic.corner_pairs(cfg["images"]["synthetic"].get("corner_pairs", 0))


def corner_expected(cfg: dict) -> dict[str, str]:
    """Expected answer to the question ``top_left`` of each corner-pair image: ``yes`` for A, ``no``
    for B."""
    return {i: ans for pair in corner_pairs(cfg) for i, ans in zip(pair, CORNER_ANSWERS, strict=True)}


def synthetic_ids(cfg: dict) -> list[str]:
    """Ids of the images the pipeline draws: the named scenes, then the corner pairs (A, B, A, B, ...)."""
    return list(cfg["images"]["synthetic"]["scenes"]) + [i for pair in corner_pairs(cfg) for i in pair]


def image_ids(cfg: dict) -> list[str]:
    """Ids of the config's own images: synthetic scenes, corner pairs, then ``images.files``."""
    return synthetic_ids(cfg) + list(cfg["images"]["files"])


def question_images(cfg: dict, question: str) -> list[str]:
    """The config's images asked ``question``: its ``images`` (all by default); the ``top_left``
    question is asked of every corner-pair image in any case."""
    qc = cfg["questions"][question]
    if "images" not in qc:
        return image_ids(cfg)
    imgs = list(qc["images"])
    if question == CORNER_QUESTION:
        listed = set(imgs)
        imgs += [i for pair in corner_pairs(cfg) for i in pair if i not in listed]
    return imgs


def expected_answers(cfg: dict) -> dict[str, dict[str, str]]:
    """question id → image id → expected answer: each question's ``expected``, plus the ``top_left``
    answers of the corner pairs when the config has that question."""
    out = {q: dict(qc["expected"]) for q, qc in cfg["questions"].items() if qc["expected"]}
    if CORNER_QUESTION in cfg["questions"] and corner_pairs(cfg):
        given = out.get(CORNER_QUESTION, {})
        out[CORNER_QUESTION] = {**given, **{i: a for i, a in corner_expected(cfg).items() if i not in given}}
    return out


def samples(cfg: dict) -> list[Sample]:
    """The config's own samples: explicit ``samples``, or models × images × questions (respecting
    each question's ``images``, :func:`question_images`). Sample sheets add theirs in
    :func:`load_dataset`."""
    if cfg["samples"]:
        return [Sample(**s) for s in cfg["samples"]]
    out = []
    for m in cfg["models"]:
        for q in cfg["questions"]:
            for i in question_images(cfg, q):
                out.append(Sample(m, i, q))
    return out


def shard_of(name: str, n_shards: int) -> int:
    """Shard of the sample named ``name`` (``{image}__{question}``): the first 8 bytes of its SHA-256,
    big-endian, modulo ``n_shards``. A pure function of the name, so adding a sample changes its own
    shard only."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n_shards


def shard_label(k: int, n_shards: int) -> str:
    """Zero-padded shard label (``"03"`` of 16 shards), the ``{shard}`` of output paths."""
    return f"{k:0{len(str(max(n_shards - 1, 0)))}d}"


def shard_samples(samples: list[Sample], n_shards: int) -> dict[str, dict[str, list[Sample]]]:
    """model → shard label → its distinct samples sorted by name; empty shards are left out."""
    out: dict[str, dict[str, list[Sample]]] = {}
    for s in sorted(set(samples), key=lambda s: (s.model, s.name)):
        label = shard_label(shard_of(s.name, n_shards), n_shards)
        out.setdefault(s.model, {}).setdefault(label, []).append(s)
    return {m: dict(sorted(by.items())) for m, by in out.items()}


def check_boxes(objects: list[dict], size: tuple[int, int], key: str) -> None:
    """Raise :class:`InputError` for a ground-truth box outside the image or with x0 > x1 / y0 > y1."""
    width, height = size
    for k, o in enumerate(objects):
        x0, y0, x1, y1 = o["box"]
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise InputError(f"{key}.objects[{k}].box: {o['box']} is not a box inside the {width}x{height} image")


#: prefill_rows modes, narrowest first: each stores the rows of the ones before it
PREFILL_ROW_ORDER = ("last", "text_after_image", "all_text", "all")


def check(cfg: dict, base_dir: Path) -> None:
    """The core's cross-reference checks the schema cannot express (images, questions, models,
    samples; each wing checks its own block, :func:`vlmattn.workflow.load_config`); raises on the
    first problem."""
    unknown = [s for s in cfg["images"]["synthetic"]["scenes"] if s not in DEFAULT_SCENES]
    if unknown:
        raise ConfigError(f"config images.synthetic.scenes: unknown scene {unknown[0]!r} "
                          f"(known: {', '.join(DEFAULT_SCENES)})")
    dup = set(synthetic_ids(cfg)) & set(cfg["images"]["files"])
    if dup:
        raise ConfigError(f"config images.files.{sorted(dup)[0]}: id is also a synthetic scene")
    for m, mc in cfg["models"].items():
        if "build" not in mc and "path" not in mc:
            raise ConfigError(f"config models.{m}: give a checkpoint 'path' or a 'build' block")
    for i, spec in cfg["images"]["files"].items():
        size = check_image_file(spec["path"], f"config images.files.{i}.path", base_dir,
                                cfg["images"]["max_pixels"])
        check_boxes(spec["objects"], size, f"config images.files.{i}")
    imgs = set(image_ids(cfg))
    for q, qc in cfg["questions"].items():
        for i in list(qc.get("images", [])) + list(qc["expected"]):
            if i not in imgs:
                raise ConfigError(f"config questions.{q}: unknown image {i!r}")
    if CORNER_QUESTION in cfg["questions"]:
        given = cfg["questions"][CORNER_QUESTION]["expected"]
        for i, ans in corner_expected(cfg).items():
            if i in given and given[i].lower() != ans:
                raise ConfigError(f"config questions.{CORNER_QUESTION}.expected.{i}: {given[i]!r} contradicts the "
                                  f"corner pair's {ans!r}")
    for k, s in enumerate(cfg["samples"]):
        for key, pool in (("model", cfg["models"]), ("image", imgs), ("question", cfg["questions"])):
            if s[key] not in pool:
                raise ConfigError(f"config samples[{k}].{key}: unknown {key} {s[key]!r}")


@dataclass
class ImageSource:
    """An image of the dataset: the file extraction reads (relative to the working directory) and
    its ground truth, as ``objects`` (``{label, colour, box}``, pixel boxes) or, for a synthetic
    scene, the ``annotation`` JSON written beside it."""

    path: str
    objects: list[dict] = field(default_factory=list)
    annotation: str | None = None


@dataclass
class Dataset:
    """What the workflow runs on: images, question texts, expected answers and samples."""

    images: dict[str, ImageSource]
    questions: dict[str, str]
    expected: dict[str, dict[str, str]]  # question id → image id → expected answer
    samples: list[Sample]

    def record(self, s: Sample) -> dict:
        """What an extraction job needs to know about sample ``s``."""
        im = self.images[s.image]
        return {"image_id": s.image, "question_id": s.question, "question": self.questions[s.question],
                "image": im.path, "annotation": im.annotation, "objects": im.objects}


def load_dataset(cfg: dict, base_dir: str | Path = ".") -> Dataset:
    """The dataset of a validated config: its own images, questions and samples (:func:`samples`),
    plus every row of each sample sheet in ``sheets`` (:mod:`vlmattn.datasets`) on every model.

    Sheet images are checked (present, readable) and get the boxes of the sheet's COCO
    ``annotations``. A sheet may name a config question by id; its image ids must not name another
    file, its question ids not another text. Raises a one-line error naming the sheet and line.
    """
    from .datasets import coco_objects, read_coco, read_sheet

    base = Path(base_dir)
    res = cfg["results"]
    images = {i: ImageSource(f"{res}/images/{i}.png", annotation=f"{res}/images/{i}.json")
              for i in synthetic_ids(cfg)}
    images.update({i: ImageSource(spec["path"], list(spec["objects"])) for i, spec in cfg["images"]["files"].items()})
    questions = {q: qc["text"] for q, qc in cfg["questions"].items()}
    expected = expected_answers(cfg)
    out = samples(cfg)
    for spec in cfg["sheets"]:
        sheet = read_sheet(spec["path"], base)
        coco = read_coco(spec["annotations"], base) if spec.get("annotations") else None
        sizes: dict[str, tuple[int, int]] = {}
        for row in sheet.rows:
            where = f"sheet {sheet.path} line {row.line}"
            if row.image_path not in sizes:
                sizes[row.image_path] = check_image_file(row.image_path, where, base, cfg["images"]["max_pixels"])
            known = images.get(row.image_id)
            if known is None:
                objects = coco_objects(coco, spec["annotations"], row.image_path, sizes[row.image_path]) if coco else []
                images[row.image_id] = ImageSource(row.image_path, objects)
            elif known.path != row.image_path:
                raise InputError(f"{where}: duplicate image id {row.image_id!r}, already {known.path}")
            if row.question is None:
                if row.question_id not in questions:
                    raise InputError(f"{where}: unknown question id {row.question_id!r} (give its text in a "
                                     "'question' column or define it in config questions)")
            elif questions.setdefault(row.question_id, row.question) != row.question:
                raise InputError(f"{where}: question id {row.question_id!r} already has the text "
                                 f"{questions[row.question_id]!r}")
            if row.expected is not None:
                given = expected.setdefault(row.question_id, {}).setdefault(row.image_id, row.expected)
                if given != row.expected:
                    raise InputError(f"{where}: expected answer {row.expected!r} contradicts {given!r}")
            out.extend(Sample(m, row.image_id, row.question_id) for m in cfg["models"])
    return Dataset(images, questions, expected, list(dict.fromkeys(out)))
