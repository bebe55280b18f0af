# Attention capture: the GPU rules. Resources come from config `extraction.resources`.
#
# One job per (model, batch) loads the model once and writes one HDF5 file per sample. A model's
# samples, sorted by (image, question), are cut into runs of `extraction.batch_size` B
# (vlmattn.config.extraction_batches), so a full run over N samples loads each model ⌈N/B⌉ times.
# Rule outputs cannot be functions, so one rule is generated per batch.
#
# Trade-off: batches are contiguous runs of the sorted list, so adding a sample shifts every later
# batch of that model by one sample, and Snakemake reruns those jobs (their params changed).
# Every extracted sample is kept in {results}/cache/extract under a hash of all it depends on
# (vlmattn.jobs.sample_cache_key); a shifted batch finds all its samples there and links them
# without loading the model. Only the batch holding the new sample runs the model, for that
# sample: at most B samples are ever re-extracted. Delete the cache to force re-extraction.
EXTRACT_RES = config["extraction"]["resources"]
EXTRACT_SETTINGS = {
    k: v
    for k, v in config["extraction"].items()
    if k not in ("resources", "batch_size")
}


for _model, _batches in BATCHES.items():
    for _k, _members in enumerate(_batches):

        rule:
            name:
                f"extract_{_model}_{_k}"
            input:
                images=sorted({image_file(s.image) for s in _members}),
                annotations=sorted(
                    {annotation_file(s.image) for s in _members} - {None}
                ),
                model=model_inputs(_model),
            output:
                [f"{R}/attention/{_model}/{s.name}.h5" for s in _members],
            log:
                f"{R}/logs/extract/{_model}/batch{_k}.log",
            benchmark:
                f"{R}/benchmarks/extract/{_model}/batch{_k}.tsv"
            conda:
                ENV
            threads: EXTRACT_RES["threads"]
            resources:
                gpu=EXTRACT_RES["gpu"],
                mem_mb=EXTRACT_RES["mem_mb"],
                runtime=EXTRACT_RES["runtime"],
            params:
                model=model_params(_model),
                samples=[sample_record(s) for s in _members],
                settings=EXTRACT_SETTINGS,
                seed=config["seed"],
                cache=f"{R}/cache/extract/{_model}",
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
