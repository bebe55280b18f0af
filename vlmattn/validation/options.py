"""The ``validation`` block's checks."""

from __future__ import annotations

from ..errors import ConfigError


def check(cfg: dict) -> None:
    """The trained and untrained models exist, the object questions exist, and the metrics the checks
    read (spatial, concentration) are computed."""
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
