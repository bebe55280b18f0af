rule build_model:
    output:
        directory(f"{R}/models/{{model}}"),
    log:
        f"{R}/logs/build_model/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/build_model/{{model}}.tsv"
    conda:
        ENV
    threads: 2
    params:
        build=lambda w: config["models"][w.model]["build"],
        family=lambda w: config["models"][w.model]["family"],
    script:
        "../workflow_scripts/build_model.py"
