# One rule per metric and stage, generated from the `metrics` config block. A metric job computes the
# metric for every sample of one (model, shard) in one process; it gets only its own config block as
# params (plus the sink rule of `metrics.sinks` when it excludes sinks) and, as code inputs, the
# project files its module and job read (code_of, derived from the imports), so editing one metric's
# config or module reruns that metric's jobs alone, and editing a module they share (maps.py)
# reruns the metrics that read it. The table merges the shard tables in sample order. Metrics with
# per-sample figures (SAMPLE_PLOTS) get a fourth rule
# drawing them, for the `sample_figures` first samples of each model, from the cache. On a cluster
# the metric jobs form the group `metrics`, submitted `group-components` at a time (profiles/slurm).


include: "helpers/metrics.smk"


for _metric in METRICS:

    rule:
        name:
            f"metric_{_metric}"
        input:
            index=shard_index("{model}", "{shard}"),
            code=code_of("metric.py", f"vlmattn.metrics.{_metric}"),
        output:
            f"{R}/metrics/{_metric}/{{model}}/{{shard}}.csv",
        log:
            f"{R}/logs/metrics/{_metric}/{{model}}/{{shard}}.log",
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
            f"table_{_metric}"
        input:
            tables=shard_tables(_metric),
            code=code_of("aggregate.py"),
        output:
            report(
                f"{R}/tables/{_metric}.csv",
                caption=f"../report/{_metric}.rst",
                category="6. Metric tables",
            ),
        log:
            f"{R}/logs/tables/{_metric}.log",
        conda:
            ENV_ANALYSIS
        script:
            "../workflow_scripts/aggregate.py"

    rule:
        name:
            f"plot_{_metric}"
        input:
            table=f"{R}/tables/{_metric}.csv",
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
