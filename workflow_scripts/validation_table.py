from vlmattn import tables
from vlmattn.validation import jobs

tables.log_to(snakemake.log[0])
i = snakemake.input
jobs.validation_table(i.answers, i.spatial, i.concentration, snakemake.params.cfg, snakemake.output[0])
