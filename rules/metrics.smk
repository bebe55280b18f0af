# One rule per metric and stage, generated from the `metrics` config block. Each metric job gets only
# its own config block as params (plus the sink rule of `metrics.sinks` when it excludes sinks) and its
# library module as an input, so editing one metric's config or code reruns that metric's jobs alone.
# Metrics with per-sample figures (SAMPLE_PLOTS) get a fourth rule drawing them from the cache.
for _metric in METRICS:

    rule:
        name:
            f"metric_{_metric}"
        input:
            h5=f"{R}/attention/{{model}}/{{image}}__{{question}}.h5",
            code=LIB / "metrics" / f"{_metric}.py",
        output:
            f"{R}/metrics/{_metric}/{{model}}/{{image}}__{{question}}.csv",
        log:
            f"{R}/logs/metrics/{_metric}/{{model}}/{{image}}__{{question}}.log",
        conda:
            ENV
        params:
            metric=_metric,
            cfg=metric_config(_metric),
        script:
            "../workflow_scripts/metric.py"

    rule:
        name:
            f"table_{_metric}"
        input:
            tables=sample_files(
                f"{R}/metrics/{_metric}/{{model}}/{{image}}__{{question}}.csv"
            ),
        output:
            report(
                f"{R}/tables/{_metric}.csv",
                caption=f"../report/{_metric}.rst",
                category="Tables",
            ),
        log:
            f"{R}/logs/tables/{_metric}.log",
        conda:
            ENV
        script:
            "../workflow_scripts/aggregate.py"

    rule:
        name:
            f"plot_{_metric}"
        input:
            table=f"{R}/tables/{_metric}.csv",
            code=LIB / "metrics" / f"{_metric}.py",
        output:
            [
                report(
                    f"{R}/plots/{p}.png",
                    caption=f"../report/{_metric}.rst",
                    category="Plots",
                )
                for p in get_metric(_metric).PLOTS
            ],
        log:
            f"{R}/logs/plots/{_metric}.log",
        conda:
            ENV
        params:
            metric=_metric,
            cfg=metric_config(_metric),
        script:
            "../workflow_scripts/plot_metric.py"

    if sample_plots(_metric):

        rule:
            name:
                f"figures_{_metric}"
            input:
                h5=f"{R}/attention/{{model}}/{{image}}__{{question}}.h5",
                image=lambda w: image_file(w.image),
                code=LIB / "metrics" / f"{_metric}.py",
            output:
                [
                    report(
                        p,
                        caption=f"../report/{_metric}.rst",
                        category="Samples",
                        subcategory="{image} / {question}",
                    )
                    for p in sample_plot_files(_metric)
                ],
            log:
                f"{R}/logs/figures/{_metric}/{{model}}/{{image}}__{{question}}.log",
            conda:
                ENV
            params:
                metric=_metric,
                cfg=metric_config(_metric),
            script:
                "../workflow_scripts/plot_sample.py"
