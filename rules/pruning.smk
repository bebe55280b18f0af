# Visual-token pruning ablations (config `pruning`, vlmattn.pruning). Offline: one job per (model,
# shard) scores the cached samples' vision tokens with every scorer and budget (object-token recall,
# retained attention) and one job summarises them. Online: one model job per (model, chunk) of the
# held-out evaluation set reruns the model with the other vision tokens dropped (resources from
# pruning.online.resources, GPU-tagged on a cluster); one job turns the chunks into the ablation tables with
# intervals and McNemar tests, and their ranking; one job per model draws the figures. Learned pruners
# (pruning.learned): one training job per (model, variant) on the frozen model, one model job per
# (model, chunk) runs them on the same evaluation set, one job compares them with FastV, the best
# head/query strategy, random and pooling.


include: "helpers/pruning.smk"


rule pruning_offline:
    input:
        index=shard_index("{model}", "{shard}"),
        code=code_of("pruning_offline.py"),
    output:
        f"{R}/pruning/{{model}}/offline/{{shard}}.csv",
    log:
        f"{R}/logs/pruning/offline/{{model}}/{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/pruning/offline/{{model}}/{{shard}}.tsv"
    group:
        "metrics"
    conda:
        ENV_ANALYSIS
    params:
        options=lambda w: offline_options(config),
    script:
        "../workflow_scripts/pruning_offline.py"


rule table_pruning_offline:
    input:
        shards=pruning_offline_shards(),
        code=code_of("pruning_offline_table.py"),
    output:
        report(
            f"{R}/tables/pruning_offline.csv",
            caption="../report/pruning_offline.rst",
            category="4. Pruning",
            subcategory="tables",
        ),
    log:
        f"{R}/logs/tables/pruning_offline.log",
    conda:
        ENV_ANALYSIS
    params:
        confidence=lambda w: statistics_options(config)["confidence"],
    script:
        "../workflow_scripts/pruning_offline_table.py"


rule pruning_online:
    input:
        model=lambda w: model_inputs(w.model),
        code=code_of("pruning_online.py"),
    output:
        f"{R}/pruning/{{model}}/online/{{chunk}}.csv",
    log:
        f"{R}/logs/pruning/online/{{model}}/{{chunk}}.log",
    benchmark:
        f"{R}/benchmarks/pruning/online/{{model}}/{{chunk}}.tsv"
    conda:
        ENV_MODELS
    threads: PRUNING_RES["threads"]
    resources:
        gpu=PRUNING_RES["gpu"],
        mem_mb=PRUNING_RES["mem_mb"],
        runtime=PRUNING_RES["runtime"],
    params:
        model=lambda w: model_params(w.model),
        options=lambda w: online_options(config),
        chunk=lambda w: int(w.chunk),
    message:
        "Online pruning: model {wildcards.model}, chunk {wildcards.chunk}"
    script:
        "../workflow_scripts/pruning_online.py"


rule table_pruning:
    input:
        chunks=pruning_online_chunks(),
        code=code_of("pruning_tables.py"),
    output:
        [
            report(
                f"{R}/tables/pruning_{t}.csv",
                caption=f"../report/pruning_{t}.rst",
                category="4. Pruning",
                subcategory="tables",
            )
            for t in PRUNING_TABLES
        ],
    log:
        f"{R}/logs/tables/pruning.log",
    conda:
        ENV_ANALYSIS
    params:
        statistics=lambda w: statistics_options(config),
        convention=lambda w: online_options(config)["budgets"]["convention"],
    script:
        "../workflow_scripts/pruning_tables.py"


rule plot_pruning_offline:
    input:
        table=f"{R}/tables/pruning_offline.csv",
        code=code_of("plot_pruning_offline.py"),
    output:
        report(
            f"{R}/plots/pruning/{{model}}/offline.png",
            caption="../report/pruning_offline.rst",
            category="4. Pruning",
            subcategory="{model}",
        ),
    log:
        f"{R}/logs/plots/pruning/offline/{{model}}.log",
    conda:
        ENV_ANALYSIS
    script:
        "../workflow_scripts/plot_pruning_offline.py"


rule plot_pruning:
    input:
        tables=[f"{R}/tables/pruning_{t}.csv" for t in PRUNING_TABLES[:3]],
        code=code_of("plot_pruning.py"),
    output:
        [
            report(
                f"{R}/plots/pruning/{{model}}/{s}_{m}.png",
                caption=f"../report/pruning_{s}.rst",
                category="4. Pruning",
                subcategory="{model}",
            )
            for s in PRUNING_TABLES[:3]
            for m in PRUNING_MODES
        ],
    log:
        f"{R}/logs/plots/pruning/online/{{model}}.log",
    conda:
        ENV_ANALYSIS
    params:
        modes=PRUNING_MODES,
    script:
        "../workflow_scripts/plot_pruning.py"


rule train_pruner:
    input:
        model=lambda w: model_inputs(w.model),
        code=code_of("train_pruner.py"),
    output:
        weights=f"{R}/pruners/{{model}}/{{variant}}.safetensors",
        report=f"{R}/pruners/{{model}}/{{variant}}.csv",
    log:
        f"{R}/logs/pruners/{{model}}/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/pruners/{{model}}/{{variant}}.tsv"
    conda:
        ENV_MODELS
    threads: 1
    resources:
        gpu=PRUNING_RES["gpu"],
        mem_mb=PRUNING_RES["mem_mb"],
        runtime=PRUNING_RES["runtime"],
    params:
        model=lambda w: model_params(w.model),
        options=lambda w: train_options(config, w.variant),
    message:
        "Training learned pruner {wildcards.variant} on model {wildcards.model}"
    script:
        "../workflow_scripts/train_pruner.py"


rule pruning_learned:
    input:
        model=lambda w: model_inputs(w.model),
        pruners=lambda w: pruner_files(w.model, "safetensors"),
        code=code_of("pruning_learned.py"),
    output:
        f"{R}/pruning/{{model}}/learned/{{chunk}}.csv",
    log:
        f"{R}/logs/pruning/learned/{{model}}/{{chunk}}.log",
    benchmark:
        f"{R}/benchmarks/pruning/learned/{{model}}/{{chunk}}.tsv"
    conda:
        ENV_MODELS
    threads: PRUNING_RES["threads"]
    resources:
        gpu=PRUNING_RES["gpu"],
        mem_mb=PRUNING_RES["mem_mb"],
        runtime=PRUNING_RES["runtime"],
    params:
        model=lambda w: model_params(w.model),
        options=lambda w: learned_options(config),
        chunk=lambda w: int(w.chunk),
    message:
        "Learned pruners online: model {wildcards.model}, chunk {wildcards.chunk}"
    script:
        "../workflow_scripts/pruning_learned.py"


rule table_pruning_learned:
    input:
        online=pruning_online_chunks(),
        learned=learned_chunks(),
        reports=[f for m in PRUNING_ONLINE for f in pruner_files(m, "csv")],
        code=code_of("pruning_learned_tables.py"),
    output:
        comparison=report(
            f"{R}/tables/pruning_learned.csv",
            caption="../report/pruning_learned.rst",
            category="4. Pruning",
            subcategory="tables",
        ),
        training=report(
            f"{R}/tables/pruner_training.csv",
            caption="../report/pruner_training.rst",
            category="4. Pruning",
            subcategory="tables",
        ),
    log:
        f"{R}/logs/tables/pruning_learned.log",
    conda:
        ENV_ANALYSIS
    params:
        statistics=lambda w: statistics_options(config),
    script:
        "../workflow_scripts/pruning_learned_tables.py"


rule plot_pruning_learned:
    input:
        comparison=f"{R}/tables/pruning_learned.csv",
        training=f"{R}/tables/pruner_training.csv",
        code=code_of("plot_pruning_learned.py"),
    output:
        comparison=report(
            f"{R}/plots/pruning/{{model}}/learned.png",
            caption="../report/pruning_learned.rst",
            category="4. Pruning",
            subcategory="{model}",
        ),
        training=report(
            f"{R}/plots/pruning/{{model}}/pruner_training.png",
            caption="../report/pruner_training.rst",
            category="4. Pruning",
            subcategory="{model}",
        ),
    log:
        f"{R}/logs/plots/pruning/learned/{{model}}.log",
    conda:
        ENV_ANALYSIS
    script:
        "../workflow_scripts/plot_pruning_learned.py"
