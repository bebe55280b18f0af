# Helpers of rules/metrics.smk: each metric's params, shard tables, summary and per-sample figures.
from vlmattn.metrics.options import metric_params


def shard_table(metric, model, shard):
    """One shard's Parquet file of a metric's dataset, {results}/tables/{metric}/."""
    return f"{R}/tables/{metric}/{model}/{shard}.parquet"


def shard_tables(metric):
    return [shard_table(metric, m, k) for m, by in SHARDS.items() for k in by]


def summary_file(metric):
    return f"{R}/summaries/{metric}.csv"


def extra_files(metric):
    """A metric's summaries of another shape (SUMMARY_EXTRAS): name → its Parquet file."""
    return {e: f"{R}/summaries/{metric}_{e}.parquet" for e in summary_extras(metric)}


def metric_config(metric):
    """The params of a metric's jobs: its block, plus the sink rule when it excludes sinks."""
    return metric_params(metric, config["metrics"])


def figure_samples():
    """Per model, the first `sample_figures` samples in name order: those get per-sample figures."""
    n = config["sample_figures"]
    firsts = []
    for by in SHARDS.values():
        mine = sorted(
            (s for members in by.values() for s in members), key=lambda s: s.name
        )
        firsts += mine[:n]
    return firsts


def figure_dir(s):
    return f"{R}/plots/samples/{s.model}/{s.name}"


def figure_file(s, plot):
    return f"{figure_dir(s)}/{plot}.png"


FIGURE_SAMPLES = figure_samples()
