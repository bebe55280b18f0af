from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.metric(snakemake.params.metric, snakemake.input.index, snakemake.params.cfg, snakemake.output[0])
