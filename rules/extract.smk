# Attention capture: the GPU rule. Resources come from config `extraction.resources`.
EXTRACT_RES = config["extraction"]["resources"]


rule extract:
    input:
        image=image_path,
        annotation=annotation_input,
        model=model_input,
    output:
        f"{R}/attention/{{model}}/{{image}}__{{question}}.h5",
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
    log:
        f"{R}/logs/extract/{{model}}/{{image}}__{{question}}.log",
    benchmark:
        f"{R}/benchmarks/extract/{{model}}/{{image}}__{{question}}.tsv"
    threads: EXTRACT_RES["threads"]
    resources:
        gpu=EXTRACT_RES["gpu"],
        mem_mb=EXTRACT_RES["mem_mb"],
        runtime=EXTRACT_RES["runtime"],
    conda:
        ENV
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
    params:
        expected={q: c["expected"] for q, c in config["questions"].items()},
    log:
        f"{R}/logs/answers.log",
    conda:
        ENV
    script:
        "../workflow_scripts/answers.py"
