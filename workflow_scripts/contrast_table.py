from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.contrast_table(list(snakemake.input), snakemake.output[0])
