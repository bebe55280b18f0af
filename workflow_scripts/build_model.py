from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.build_model(
    snakemake.params.build,
    snakemake.output[0],
    snakemake.threads,
    family=snakemake.params.family,
)
