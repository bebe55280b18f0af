from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.overview(snakemake.input.answers, snakemake.input.validation, snakemake.output[0])
