rule build_model:
    output:
        directory(f"{R}/models/{{model}}"),
    params:
        build=lambda w: config["models"][w.model]["build"],
        family=lambda w: config["models"][w.model]["family"],
    log:
        f"{R}/logs/build_model/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/build_model/{{model}}.tsv"
    threads: 2
    conda:
        ENV
    script:
        "../workflow_scripts/build_model.py"
