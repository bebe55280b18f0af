from vlmattn import tables
from vlmattn.validation import jobs

tables.log_to(snakemake.log[0])
jobs.overview(snakemake.input.answers, snakemake.input.validation, snakemake.output[0])
