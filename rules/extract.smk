# Attention capture: the GPU rule. Resources come from config `extraction.resources`.
EXTRACT_RES = config["extraction"]["resources"]


rule extract:
    input:
        image=image_path,
        annotation=annotation_input,
        model=model_input,
    output:
        f"{R}/attention/{{model}}/{{image}}__{{question}}.h5",
    log:
        f"{R}/logs/extract/{{model}}/{{image}}__{{question}}.log",
    benchmark:
        f"{R}/benchmarks/extract/{{model}}/{{image}}__{{question}}.tsv"
    conda:
        ENV
    threads: EXTRACT_RES["threads"]
    resources:
        gpu=EXTRACT_RES["gpu"],
        mem_mb=EXTRACT_RES["mem_mb"],
        runtime=EXTRACT_RES["runtime"],
    params:
        model=lambda w: {
            **config["models"][w.model],
            "id": w.model,
            "path": model_path(w.model),
        },
        objects=image_objects,
        question=lambda w: config["questions"][w.question]["text"],
        settings={k: v for k, v in config["extraction"].items() if k != "resources"},
        seed=config["seed"],
    script:
        "../workflow_scripts/extract.py"


rule answers:
    input:
        sample_files(f"{R}/attention/{{model}}/{{image}}__{{question}}.h5"),
    output:
        report(
            f"{R}/tables/answers.csv",
            caption="../report/answers.rst",
            category="Answers",
        ),
    log:
        f"{R}/logs/answers.log",
    conda:
        ENV
    params:
        expected={q: c["expected"] for q, c in config["questions"].items()},
    script:
        "../workflow_scripts/answers.py"
