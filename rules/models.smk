rule build_model:
    input:
        code=code_of("build_model.py"),
    output:
        directory(f"{R}/models/{{model}}"),
    log:
        f"{R}/logs/build_model/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/build_model/{{model}}.tsv"
    wildcard_constraints:
        model=model_alternatives([m for m in BUILT if m not in TRAINED]),
    conda:
        ENV_MODELS
    threads: 2
    params:
        build=lambda w: config["models"][w.model]["build"],
        family=lambda w: config["models"][w.model]["family"],
    message:
        "Building model {wildcards.model}"
    script:
        "../workflow_scripts/build_model.py"


rule train_model:
    input:
        sheets=lambda w: training_sheets(w.model),
        code=code_of("train_model.py"),
    output:
        model=directory(f"{R}/models/{{model}}"),
        report=report(
            f"{R}/tables/training_{{model}}.csv",
            caption="../report/training.rst",
            category="2. Model",
        ),
        plot=report(
            f"{R}/plots/training_{{model}}.png",
            caption="../report/training.rst",
            category="2. Model",
        ),
    log:
        f"{R}/logs/train_model/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train_model/{{model}}.tsv"
    wildcard_constraints:
        model=model_alternatives(TRAINED),
    conda:
        ENV_MODELS
    threads: 2
    resources:
        runtime=60,
    params:
        spec=lambda w: config["models"][w.model]["build"]["spec"],
    message:
        "Training model {wildcards.model}"
    script:
        "../workflow_scripts/train_model.py"
