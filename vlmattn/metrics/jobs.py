"""The metric wing's workflow jobs: one metric over one shard (a Parquet file), its summary over every
shard, its figures from the summary, its per-sample figures from the cache."""

from __future__ import annotations

from pathlib import Path

from ..progress import progress
from ..tables import one_line_errors, read_index, write_parquet


@one_line_errors()
def metric(name: str, index: str, cfg: dict, out: str) -> None:
    """Metric ``name`` for every sample of one shard (its ``index``), rows in the index's order, written
    one sample at a time to the shard's Parquet file."""
    from ..store import read_sample
    from . import compute_table

    idx = read_index(index)

    def frames():
        for row in progress(idx.itertuples(index=False), total=len(idx), desc=f"{name}", unit="sample"):
            ids = {"model": row.model, "image": row.image, "question": row.question}
            yield compute_table(name, read_sample(row.file), cfg, ids)

    write_parquet(frames(), out)


@one_line_errors()
def summary(name: str, tables: list[str], out: str, extras: dict[str, str]) -> None:
    """The summary of metric ``name`` (:mod:`vlmattn.summaries`) over its shard files, and each of the
    metric's ``SUMMARY_EXTRAS`` (name → its Parquet file in ``extras``)."""
    from ..summaries import summarise_files, write_summary
    from ..tables import write_parquet
    from . import get_metric, summary_extras

    module = get_metric(name)
    write_summary(summarise_files(tables, module.SUMMARY_KEYS, getattr(module, "SUMMARY_SKIP", ())), out)
    for extra, function in summary_extras(name).items():
        write_parquet([function(tables)], extras[extra])


@one_line_errors()
def plot(name: str, summary: str, cfg: dict, out_dir: str, extras: dict[str, str]) -> None:
    """The figures of metric ``name`` from its summary (:func:`vlmattn.summaries.means`) and extra
    summaries (``extras``: name → Parquet file, passed to ``plot`` by name)."""
    from ..summaries import means, read_summary
    from ..tables import read_parquet
    from . import get_metric

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    more = {k: read_parquet(p) for k, p in extras.items()}
    get_metric(name).plot(means(read_summary(summary)), cfg, Path(out_dir), **more)


@one_line_errors()
def plot_samples(name: str, samples: list[dict], cfg: dict) -> None:
    """Per-sample figures of metric ``name``: for each ``{h5, image, out_dir}``, from its cache file
    (and its image) into ``out_dir``."""
    from ..store import read_sample
    from . import get_metric

    module = get_metric(name)
    for s in progress(samples, desc=f"{name} figures", unit="sample"):
        Path(s["out_dir"]).mkdir(parents=True, exist_ok=True)
        module.plot_sample(read_sample(s["h5"]), cfg, Path(s["out_dir"]), s["image"])
