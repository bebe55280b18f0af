"""The ``metrics`` block → what each metric's jobs read (its own block, the sink rule when it excludes
sinks), and the block's checks."""

from __future__ import annotations

from ..config import metric_defaults
from ..errors import ConfigError
from ..maps import SINK_RULE_KEYS
from . import METRICS


def metric_params(name: str, metrics_cfg: dict) -> dict:
    """The config a metric's jobs receive: its own block (``metrics_cfg[name]``, defaults filled in),
    plus ``sink_rule`` (``ratio``, ``min_fraction``, ``min_vision_share`` of ``metrics.sinks``, or of
    the schema's defaults of that block when the sinks metric is left out) when the block excludes
    sinks."""
    cfg = dict(metrics_cfg[name])
    if "exclude_sinks" in cfg and cfg["exclude_sinks"] is not False:
        sinks = metrics_cfg["sinks"] if "sinks" in metrics_cfg else metric_defaults("sinks")
        cfg["sink_rule"] = {k: sinks[k] for k in SINK_RULE_KEYS}
    return cfg


def check(cfg: dict) -> None:
    """Each block of ``metrics`` names a known metric, its boxes have x0 < x1 and y0 < y1,
    ``small_area`` lies below ``large_area``, and ``per_head: false`` comes with a head pooling."""
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
        if mc.get("per_head") is False and not mc["head_pooling"]:
            raise ConfigError(f"config metrics.{name}: per_head: false needs a head_pooling (mean and / or max)")
