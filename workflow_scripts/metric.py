from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.metric(snakemake.params.metric, snakemake.input.h5, snakemake.params.cfg, snakemake.output[0])
