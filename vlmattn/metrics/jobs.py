"""The metric wing's workflow jobs: one metric over one shard, its figures, its per-sample figures."""

from __future__ import annotations

from pathlib import Path

from ..progress import progress
from ..tables import one_line_errors, read_index, read_table, write_tables


@one_line_errors()
def metric(name: str, index: str, cfg: dict, out: str) -> None:
    """Metric ``name`` for every sample of one shard (its ``index``), rows in the index's order."""
    from ..store import read_sample
    from . import compute_table

    idx = read_index(index)
    frames = []
    for row in progress(idx.itertuples(index=False), total=len(idx), desc=f"{name}", unit="sample"):
        ids = {"model": row.model, "image": row.image, "question": row.question}
        frames.append(compute_table(name, read_sample(row.file), cfg, ids))
    write_tables(frames, out)


@one_line_errors()
def plot(name: str, table: str, cfg: dict, out_dir: str) -> None:
    from . import get_metric

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    get_metric(name).plot(read_table(table), cfg, Path(out_dir))


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
