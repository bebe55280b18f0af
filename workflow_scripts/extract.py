from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.extract_batch(
    model=snakemake.params.model,
    samples=snakemake.params.samples,
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    outs=list(snakemake.output),
    cache_dir=snakemake.params.cache,
    threads=snakemake.threads,
)
