# Beyond raw attention (config `attribution`, vlmattn.attribution). One model job per (model, shard)
# holding attributed samples (resources from attribution.resources, GPU-tagged on a cluster) reads the
# extracted samples for their answer token, computes every map of each sample (attention, rollout,
# attention x gradient and its rollout, integrated gradients, saliency, alignment, random) into
# {results}/attribution/{model}/{image}__{question}.h5, the deletion/insertion curves through the
# pruning harness, and the shard's vision/text separability per layer. One job turns the shards into
# the tables (faithfulness ranking with bootstrap intervals), one job per model draws the figures.


include: "helpers/attribution.smk"


rule attribute:
    input:
        index=shard_index("{model}", "{shard}"),
        model=lambda w: model_inputs(w.model),
        code=code_of("attribute.py"),
    output:
        index=f"{R}/attribution/{{model}}/shards/{{shard}}.csv",
        curves=f"{R}/attribution/{{model}}/curves/{{shard}}.csv",
        separability=f"{R}/attribution/{{model}}/separability/{{shard}}.csv",
    log:
        f"{R}/logs/attribution/{{model}}/{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/attribution/{{model}}/{{shard}}.tsv"
    conda:
        ENV_MODELS
    threads: ATTRIBUTION_RES["threads"]
    resources:
        gpu=ATTRIBUTION_RES["gpu"],
        mem_mb=ATTRIBUTION_RES["mem_mb"],
        runtime=ATTRIBUTION_RES["runtime"],
    params:
        model=lambda w: model_params(w.model),
        questions=lambda w: ATTRIBUTION["questions"],
        options=lambda w: attribute_options(config),
        out_dir=lambda w: f"{R}/attribution/{w.model}",
    message:
        "Attributions: model {wildcards.model}, shard {wildcards.shard}"
    script:
        "../workflow_scripts/attribute.py"


rule table_attribution:
    input:
        indexes=attribution_shard_files("shards"),
        curves=attribution_shard_files("curves"),
        separability=attribution_shard_files("separability"),
        code=code_of("attribution_tables.py"),
    output:
        [
            report(
                f"{R}/tables/{t}.csv",
                caption=f"../report/{t}.rst",
                category="5. Attribution",
                subcategory="tables",
            )
            for t in ATTRIBUTION_TABLES
        ],
    log:
        f"{R}/logs/tables/attribution.log",
    conda:
        ENV_ANALYSIS
    params:
        statistics=lambda w: table_options(config)["statistics"],
        seed=lambda w: table_options(config)["seed"],
    script:
        "../workflow_scripts/attribution_tables.py"


rule plot_attribution:
    input:
        samples=f"{R}/tables/attribution_samples.csv",
        curves=f"{R}/tables/faithfulness_curves.csv",
        gaps=f"{R}/tables/modality_gap.csv",
        alignment=f"{R}/tables/alignment.csv",
        code=code_of("plot_attribution.py"),
    output:
        **{
            f: report(
                f"{R}/plots/attribution/{{model}}/{f}.png",
                caption=f"../report/attribution_{f}.rst",
                category="5. Attribution",
                subcategory="{model}",
            )
            for f in ATTRIBUTION_PLOTS
        },
    log:
        f"{R}/logs/plots/attribution/{{model}}.log",
    conda:
        ENV_ANALYSIS
    params:
        overlays=lambda w: plot_options(config)["overlays"],
    script:
        "../workflow_scripts/plot_attribution.py"
