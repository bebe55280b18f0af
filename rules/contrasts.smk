# Paired contrasts (config `contrasts`): for each contrast and model, one job per analysis
# (vlmattn.contrasts.analyses: heads, quadrants, divergence, encoder, rollout) reads the pairs' HDF5
# files from the cache and writes its tables under {results}/contrasts/{contrast}/{model}/; one job per
# table merges them over contrasts and models into {results}/tables/contrast_{table}.csv. The causal
# check reruns the model on the A images with the top-ranked heads knocked out (a model job, with the
# extraction resources). Each analysis gets only its own options as params and its library module as
# an input, so editing one analysis reruns that analysis alone.


include: "helpers/contrasts.smk"


for _analysis, _tables in CONTRAST_TABLES.items():

    rule:
        name:
            f"contrast_{_analysis}"
        input:
            indexes=contrast_indexes,
            code=code_of("contrast.py", f"vlmattn.contrasts.{_analysis}"),
        output:
            [f"{R}/contrasts/{{contrast}}/{{model}}/{t}.csv" for t in _tables],
        log:
            f"{R}/logs/contrasts/{_analysis}/{{contrast}}/{{model}}.log",
        benchmark:
            f"{R}/benchmarks/contrasts/{_analysis}/{{contrast}}/{{model}}.tsv"
        group:
            "metrics"
        conda:
            ENV_ANALYSIS
        params:
            analysis=_analysis,
            files_a=lambda w: contrast_files(w, 0),
            files_b=lambda w: contrast_files(w, 1),
            options=lambda w, a=_analysis: analysis_options(
                contrast_options(config, w.contrast), a
            ),
        script:
            "../workflow_scripts/contrast.py"

    for _table in _tables:

        rule:
            name:
                f"table_contrast_{_table}"
            input:
                tables=contrast_table_inputs(_table),
            output:
                report(
                    f"{R}/tables/contrast_{_table}.csv",
                    caption=f"../report/contrast_{_analysis}.rst",
                    category="3. Contrasts",
                    subcategory="tables",
                ),
            log:
                f"{R}/logs/tables/contrast_{_table}.log",
            conda:
                ENV_ANALYSIS
            script:
                "../workflow_scripts/contrast_table.py"


rule contrast_causal:
    input:
        heads=f"{R}/contrasts/{{contrast}}/{{model}}/heads.csv",
        images=lambda w: sorted(
            {
                image_file(p[0].image)
                for p in contrast_pairs(config, w.contrast, w.model)
            }
        ),
        model=lambda w: model_inputs(w.model),
        code=code_of("causal.py"),
    output:
        [f"{R}/contrasts/{{contrast}}/{{model}}/{t}.csv" for t in CAUSAL_TABLES],
    log:
        f"{R}/logs/contrasts/causal/{{contrast}}/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/contrasts/causal/{{contrast}}/{{model}}.tsv"
    conda:
        ENV_MODELS
    threads: EXTRACT_RES["threads"]
    resources:
        gpu=EXTRACT_RES["gpu"],
        mem_mb=EXTRACT_RES["mem_mb"],
        runtime=EXTRACT_RES["runtime"],
    params:
        model=lambda w: model_params(w.model),
        a_items=lambda w: [
            {
                "image": image_file(p[0].image),
                "question": DATA.questions[p[0].question],
                "answer": DATA.expected[p[0].question][p[0].image],
            }
            for p in contrast_pairs(config, w.contrast, w.model)
        ],
        options=lambda w: contrast_options(config, w.contrast)["causal"],
    message:
        "Causal check of contrast {wildcards.contrast}: ablating ranked heads of model {wildcards.model}"
    script:
        "../workflow_scripts/causal.py"


for _table in CAUSAL_TABLES if CAUSAL else ():

    rule:
        name:
            f"table_contrast_{_table}"
        input:
            tables=contrast_table_inputs(_table),
            code=code_of("contrast_table.py"),
        output:
            report(
                f"{R}/tables/contrast_{_table}.csv",
                caption="../report/contrast_causal.rst",
                category="3. Contrasts",
                subcategory="tables",
            ),
        log:
            f"{R}/logs/tables/contrast_{_table}.log",
        conda:
            ENV_ANALYSIS
        script:
            "../workflow_scripts/contrast_table.py"


rule plot_contrast:
    input:
        heads=f"{R}/contrasts/{{contrast}}/{{model}}/heads.csv",
        encoder=f"{R}/contrasts/{{contrast}}/{{model}}/encoder_divergence_summary.csv",
        indexes=contrast_indexes,
        code=code_of("plot_contrast.py"),
    output:
        [
            report(
                f"{R}/plots/contrasts/{{contrast}}/{{model}}/{p}.png",
                caption=f"../report/contrast_{p}.rst",
                category="3. Contrasts",
                subcategory="{contrast} / {model}",
            )
            for p in CONTRAST_PLOTS
        ],
    log:
        f"{R}/logs/plots/contrasts/{{contrast}}/{{model}}.log",
    conda:
        ENV_ANALYSIS
    params:
        files_a=lambda w: contrast_files(w, 0),
        files_b=lambda w: contrast_files(w, 1),
        roi=lambda w: contrast_options(config, w.contrast)["roi"],
        labels=lambda w: [config["contrasts"][w.contrast][k] for k in ("a", "b")],
        title=lambda w: f"{w.contrast} · {w.model}",
    script:
        "../workflow_scripts/plot_contrast.py"


rule plot_causal:
    input:
        causal=f"{R}/contrasts/{{contrast}}/{{model}}/causal.csv",
        draws=f"{R}/contrasts/{{contrast}}/{{model}}/causal_draws.csv",
        code=code_of("plot_causal.py"),
    output:
        report(
            f"{R}/plots/contrasts/{{contrast}}/{{model}}/causal.png",
            caption="../report/contrast_causal.rst",
            category="3. Contrasts",
            subcategory="{contrast} / {model}",
        ),
    log:
        f"{R}/logs/plots/contrasts/causal/{{contrast}}/{{model}}.log",
    conda:
        ENV_ANALYSIS
    params:
        title=lambda w: f"{w.contrast} · {w.model}",
    script:
        "../workflow_scripts/plot_causal.py"
