from vlmattn import tables
from vlmattn.metrics import jobs

tables.log_to(snakemake.log[0])
jobs.metric(snakemake.params.metric, snakemake.input.index, snakemake.params.cfg, snakemake.output[0])
