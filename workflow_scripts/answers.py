from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.answers(list(snakemake.input), snakemake.params.expected, snakemake.output[0])
