"""Configuration: JSON-schema validation with defaults, input checks, and the sample list.

Every problem is raised as a one-line :class:`ConfigError` or :class:`InputError` that names the
config key or file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml
from PIL import Image

from .errors import ConfigError, InputError
from .images.synthetic import DEFAULT_SCENES
from .metrics import METRICS

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


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
            raise ConfigError(f"config {where}: {error.message}")
    return cfg


@dataclass(frozen=True)
class Sample:
    model: str
    image: str
    question: str

    @property
    def name(self) -> str:
        return f"{self.image}__{self.question}"


def check_image_file(path: str, key: str, base_dir: Path = Path(".")) -> None:
    """Raise :class:`InputError` naming ``path`` (as configured) if it is missing or not an image."""
    full = base_dir / path
    if not full.is_file():
        raise InputError(f"{key}: image file not found: {path}")
    try:
        with Image.open(full) as im:
            im.verify()
    except Exception:  # noqa: BLE001
        raise InputError(f"{key}: not an image file: {path}") from None


def image_ids(cfg: dict) -> list[str]:
    return list(cfg["images"]["synthetic"]["scenes"]) + list(cfg["images"]["files"])


def samples(cfg: dict) -> list[Sample]:
    """Explicit ``samples`` or models × images × questions (respecting each question's ``images``)."""
    if cfg["samples"]:
        return [Sample(**s) for s in cfg["samples"]]
    imgs = image_ids(cfg)
    out = []
    for m in cfg["models"]:
        for q, qc in cfg["questions"].items():
            for i in qc.get("images", imgs):
                out.append(Sample(m, i, q))
    return out


def extraction_batches(cfg: dict) -> dict[str, list[list[Sample]]]:
    """Per model, its distinct samples sorted by (image, question) and cut into runs of
    ``extraction.batch_size``: ``⌈N_m / B⌉`` batches for a model with ``N_m`` samples.

    Membership is a pure function of the sample set, so it is the same on every run; adding a
    sample shifts the later batches of its model by one (see ``rules/extract.smk``).
    """
    size = int(cfg["extraction"]["batch_size"])
    out: dict[str, list[list[Sample]]] = {}
    for m in cfg["models"]:
        mine = sorted({s for s in samples(cfg) if s.model == m}, key=lambda s: (s.image, s.question))
        if mine:
            out[m] = [mine[i : i + size] for i in range(0, len(mine), size)]
    return out


def check(cfg: dict, base_dir: Path) -> None:
    """Cross-reference checks the schema cannot express; raises on the first problem."""
    unknown = [s for s in cfg["images"]["synthetic"]["scenes"] if s not in DEFAULT_SCENES]
    if unknown:
        raise ConfigError(f"config images.synthetic.scenes: unknown scene {unknown[0]!r} (known: {', '.join(DEFAULT_SCENES)})")
    for name, mc in cfg["metrics"].items():
        if name not in METRICS:
            raise ConfigError(f"config metrics.{name}: unknown metric (known: {', '.join(METRICS)})")
        for r, (x0, y0, x1, y1) in mc.get("regions", {}).items():
            if not (x0 < x1 and y0 < y1):
                raise ConfigError(
                    f"config metrics.{name}.regions.{r}: need x0 < x1 and y0 < y1, got {[x0, y0, x1, y1]}"
                )
        if mc.get("small_area", 0) >= mc.get("large_area", 1):
            raise ConfigError(f"config metrics.{name}: small_area must be below large_area")
    dup = set(cfg["images"]["synthetic"]["scenes"]) & set(cfg["images"]["files"])
    if dup:
        raise ConfigError(f"config images.files.{sorted(dup)[0]}: id is also a synthetic scene")
    for m, mc in cfg["models"].items():
        if "build" not in mc and "path" not in mc:
            raise ConfigError(f"config models.{m}: give a checkpoint 'path' or a 'build' block")
    for i, spec in cfg["images"]["files"].items():
        check_image_file(spec["path"], f"config images.files.{i}.path", base_dir)
    imgs = set(image_ids(cfg))
    for q, qc in cfg["questions"].items():
        for i in list(qc.get("images", [])) + list(qc["expected"]):
            if i not in imgs:
                raise ConfigError(f"config questions.{q}: unknown image {i!r}")
    val = cfg.get("validation")
    if val:
        for key in ("trained", "untrained"):
            if val[key] not in cfg["models"]:
                raise ConfigError(f"config validation.{key}: unknown model {val[key]!r}")
        for q in val["object_questions"]:
            if q not in cfg["questions"]:
                raise ConfigError(f"config validation.object_questions: unknown question {q!r}")
        for m in ("spatial", "concentration"):
            if m not in cfg["metrics"]:
                raise ConfigError(f"config validation: needs the {m} metric in config metrics")
    for k, s in enumerate(cfg["samples"]):
        for key, pool in (("model", cfg["models"]), ("image", imgs), ("question", cfg["questions"])):
            if s[key] not in pool:
                raise ConfigError(f"config samples[{k}].{key}: unknown {key} {s[key]!r}")


def load_config(config: dict | str | Path, base_dir: str | Path = ".") -> dict:
    """Validate, fill defaults and cross-check a config (dict or YAML path)."""
    if not isinstance(config, dict):
        config = yaml.safe_load(Path(config).read_text()) or {}
    cfg = validate(config)
    check(cfg, Path(base_dir))
    return cfg
