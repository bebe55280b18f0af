# Attention capture: the GPU rule. Resources come from config `extraction.resources`.
#
# One job per (model, shard) loads the model once, runs every sample of the shard, writes one HDF5
# file per sample to {results}/attention/{model}/{image}__{question}.h5 and, last, the shard's index
# (one row per sample: its file and generated text), the job's declared output that downstream jobs
# read. A sample's shard is a stable hash of its name (vlmattn.config.shard_of), so adding a sample
# changes one shard's sample list (a param) and reruns that shard's job only. Every extracted sample
# is kept in {results}/cache/extract under a hash of all it depends on (vlmattn.extraction.jobs.sample_cache_key):
# the rerun links the shard's other samples from there and runs the model on the new sample alone.
# Delete the cache to force re-extraction.
from vlmattn.extraction.options import extract_options

EXTRACT_RES = config["extraction"]["resources"]
EXTRACT_SETTINGS = extract_options(config)


rule extract:
    input:
        images=lambda w: sorted({image_file(s.image) for s in shard_members(w)}),
        annotations=lambda w: sorted(
            {DATA.images[s.image].annotation for s in shard_members(w)} - {None}
        ),
        model=lambda w: model_inputs(w.model),
        code=code_of("extract.py"),
    output:
        shard_index("{model}", "{shard}"),
    log:
        f"{R}/logs/extract/{{model}}/{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/extract/{{model}}/{{shard}}.tsv"
    conda:
        ENV_MODELS
    threads: EXTRACT_RES["threads"]
    resources:
        gpu=EXTRACT_RES["gpu"],
        mem_mb=EXTRACT_RES["mem_mb"],
        runtime=EXTRACT_RES["runtime"],
    params:
        model=lambda w: model_params(w.model),
        samples=lambda w: [DATA.record(s) for s in shard_members(w)],
        settings=EXTRACT_SETTINGS,
        seed=config["seed"],
        attention_dir=lambda w: attention_dir(w.model),
        cache=lambda w: f"{R}/cache/extract/{w.model}",
    message:
        "Capturing attention: model {wildcards.model}, shard {wildcards.shard}"
    script:
        "../workflow_scripts/extract.py"


rule answers:
    input:
        indexes=all_shard_indexes(),
        code=code_of("answers.py"),
    output:
        report(
            f"{R}/tables/answers.csv",
            caption="../report/answers.rst",
            category="1. Overview",
        ),
    log:
        f"{R}/logs/answers.log",
    conda:
        ENV_ANALYSIS
    params:
        expected=DATA.expected,
    script:
        "../workflow_scripts/answers.py"
