from vlmattn import tables
from vlmattn.extraction import jobs

tables.log_to(snakemake.log[0])
jobs.extract_shard(
    model=snakemake.params.model,
    samples=snakemake.params.samples,
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    attention_dir=snakemake.params.attention_dir,
    index=snakemake.output[0],
    cache_dir=snakemake.params.cache,
    threads=snakemake.threads,
)
