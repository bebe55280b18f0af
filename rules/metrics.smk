# One rule per metric and stage, generated from the `metrics` config block. A metric job computes the
# metric for every sample of one (model, shard) in one process and writes the shard's Parquet file,
# {results}/tables/{metric}/{model}/{shard}.parquet: the folder {results}/tables/{metric}/ is the
# metric's dataset (pandas.read_parquet, DuckDB and polars open it as one table); no job rewrites all
# of a metric's rows into one file. It gets only its own config block as params (plus the sink rule
# of `metrics.sinks` when it excludes sinks) and, as code inputs, the project files its module and job
# read (code_of, derived from the imports), so editing one metric's config or module reruns that
# metric's jobs alone, and editing a module they share (maps.py) reruns the metrics that read it. The
# summary streams over the shard files ({results}/summaries/{metric}.csv: n, mean, sd and a 95 %
# interval over samples per key); the plots read the summary. Metrics with per-sample figures
# (SAMPLE_PLOTS) get a fourth rule drawing them, for the `sample_figures` first samples of each model,
# from the cache. On a cluster the metric jobs form the group `metrics`, submitted `group-components`
# at a time (profiles/slurm).


include: "helpers/metrics.smk"


for _metric in METRICS:

    rule:
        name:
            f"metric_{_metric}"
        input:
            index=shard_index("{model}", "{shard}"),
            code=code_of("metric.py", f"vlmattn.metrics.{_metric}"),
        output:
            shard_table(_metric, "{model}", "{shard}"),
        log:
            f"{R}/logs/metrics/{_metric}/{{model}}/{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/metrics/{_metric}/{{model}}/{{shard}}.tsv"
        group:
            "metrics"
        conda:
            ENV_ANALYSIS
        params:
            metric=_metric,
            cfg=metric_config(_metric),
        script:
            "../workflow_scripts/metric.py"

    rule:
        name:
            f"summary_{_metric}"
        input:
            tables=shard_tables(_metric),
            code=code_of("summary.py", f"vlmattn.metrics.{_metric}"),
        output:
            summary=report(
                summary_file(_metric),
                caption=f"../report/{_metric}.rst",
                category="6. Metric summaries",
            ),
            extras=list(extra_files(_metric).values()),
        log:
            f"{R}/logs/summaries/{_metric}.log",
        benchmark:
            f"{R}/benchmarks/summaries/{_metric}.tsv"
        conda:
            ENV_ANALYSIS
        params:
            metric=_metric,
            extras=extra_files(_metric),
        script:
            "../workflow_scripts/summary.py"

    rule:
        name:
            f"plot_{_metric}"
        input:
            summary=summary_file(_metric),
            extras=list(extra_files(_metric).values()),
            code=code_of("plot_metric.py", f"vlmattn.metrics.{_metric}"),
        output:
            [
                report(
                    f"{R}/plots/{p}.png",
                    caption=f"../report/{_metric}.rst",
                    category="7. Metric plots",
                    subcategory=_metric,
                )
                for p in get_metric(_metric).PLOTS
            ],
        log:
            f"{R}/logs/plots/{_metric}.log",
        conda:
            ENV_ANALYSIS
        params:
            metric=_metric,
            cfg=metric_config(_metric),
            extras=extra_files(_metric),
        script:
            "../workflow_scripts/plot_metric.py"

    if sample_plots(_metric) and FIGURE_SAMPLES:

        rule:
            name:
                f"figures_{_metric}"
            input:
                indexes=sorted(
                    {shard_index(s.model, sample_shard(s)) for s in FIGURE_SAMPLES}
                ),
                images=sorted({image_file(s.image) for s in FIGURE_SAMPLES}),
                code=code_of("plot_samples.py", f"vlmattn.metrics.{_metric}"),
            output:
                [
                    report(
                        figure_file(s, p),
                        caption=f"../report/{_metric}.rst",
                        category="8. Samples",
                        subcategory=f"{s.image} / {s.question}",
                        labels={"model": s.model, "figure": p},
                    )
                    for s in FIGURE_SAMPLES
                    for p in sample_plots(_metric)
                ],
            log:
                f"{R}/logs/figures/{_metric}.log",
            conda:
                ENV_ANALYSIS
            params:
                metric=_metric,
                cfg=metric_config(_metric),
                samples=[
                    {
                        "h5": f"{attention_dir(s.model)}/{s.name}.h5",
                        "image": image_file(s.image),
                        "out_dir": figure_dir(s),
                    }
                    for s in FIGURE_SAMPLES
                ],
            script:
                "../workflow_scripts/plot_samples.py"
