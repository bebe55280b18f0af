"""Metric registry. A metric is a module here exposing

* ``compute(sample: AttentionSample, cfg: dict) -> pandas.DataFrame`` — tidy rows for one sample;
* ``SUMMARY_KEYS`` (and optionally ``SUMMARY_SKIP``) — the key columns of its summary over samples
  (:mod:`vlmattn.summaries`; every other numeric column but the skipped ones is a quantity), and
  optionally ``SUMMARY_EXTRAS`` (name → function of the shard files) for summaries of another shape;
* ``plot(table: DataFrame, cfg: dict, out_dir: Path, **extras)`` — figures from the summary's means
  (:func:`vlmattn.summaries.means`) and the extra summaries;
* ``PLOTS`` — the figure names ``plot`` writes (``{out_dir}/{name}.png``);
* optionally ``SAMPLE_PLOTS`` and ``plot_sample(sample, cfg, out_dir, image_path)`` — per-sample
  figures drawn from the attention cache (``{out_dir}/{name}.png``).

The pipeline prepends ``model, image, question`` to each per-sample table. Every metric's config block
is its own, validated with the schema's defaults filled in (``vlmattn/schemas/config.schema.yaml``, the one
source of defaults): metric code reads each option as ``cfg[key]`` and has no defaults of its own.
:func:`metric_params` adds the sink rule of ``metrics.sinks`` to blocks that exclude sinks.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError

METRICS = (
    "concentration",
    "spatial",
    "grounding",
    "dynamics",
    "layer_profile",
    "hotspots",
    "information",
    "head_clusters",
    "geometry",
    "sinks",
)
ID_COLUMNS = ["model", "image", "question"]


def get_metric(name: str) -> ModuleType:
    """The metric module ``name``; raises :class:`ConfigError` naming the known metrics."""
    if name not in METRICS:
        raise ConfigError(f"metrics.{name}: unknown metric (known: {', '.join(METRICS)})")
    return importlib.import_module(f"{__name__}.{name}")


def compute_table(name: str, sample, cfg: dict, ids: dict) -> "pd.DataFrame":  # noqa: F821
    """Run metric ``name`` on one sample and prepend the id columns."""
    df = get_metric(name).compute(sample, cfg)
    for i, col in enumerate(ID_COLUMNS):
        df.insert(i, col, ids[col])
    return df


def summary_extras(name: str) -> dict:
    """Summaries of metric ``name`` beside its per-key summary: name → function of the shard files
    (returning a DataFrame), from the module's ``SUMMARY_EXTRAS`` (empty when it has none)."""
    return dict(getattr(get_metric(name), "SUMMARY_EXTRAS", {}))


def sample_plots(name: str) -> list[str]:
    """Per-sample figure names of metric ``name`` (empty when it draws none)."""
    return list(getattr(get_metric(name), "SAMPLE_PLOTS", []))
