from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.aggregate(list(snakemake.input.tables), snakemake.output[0])
