from vlmattn import tables
from vlmattn.metrics import jobs

tables.log_to(snakemake.log[0])
jobs.summary(snakemake.params.metric, list(snakemake.input.tables), snakemake.output.summary,
             snakemake.params.extras)
