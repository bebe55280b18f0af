from vlmattn import tables
from vlmattn.contrasts import jobs

tables.log_to(snakemake.log[0])
jobs.contrast_table(list(snakemake.input.tables), snakemake.output[0])
