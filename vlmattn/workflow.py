"""The config as the workflow reads it: the schema (defaults filled in), the core's cross-checks,
then every wing's check of its own block. The one module that knows every wing, as the Snakefile
does; no module of the library imports it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from . import config
from .attribution import options as attribution
from .contrasts import options as contrasts
from .metrics import options as metrics
from .pruning import options as pruning
from .validation import options as validation

#: each wing's check of its config block, in the order they run
WING_CHECKS = (metrics.check, validation.check, contrasts.check, pruning.check, attribution.check)


def load_config(cfg: dict | str | Path, base_dir: str | Path = ".") -> dict:
    """Validate ``cfg`` (a dict or a YAML path) against the schema with its defaults filled in
    (:func:`vlmattn.config.validate`, a copy), run the core's checks (:func:`vlmattn.config.check`,
    relative paths under ``base_dir``) and each wing's (:data:`WING_CHECKS`). Raises a one-line
    ConfigError or InputError naming the config key or file."""
    if not isinstance(cfg, dict):
        cfg = yaml.safe_load(Path(cfg).read_text()) or {}
    out = config.validate(cfg)
    config.check(out, Path(base_dir))
    for check in WING_CHECKS:
        check(out)
    return out
