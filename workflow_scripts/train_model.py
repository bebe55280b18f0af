from vlmattn import tables
from vlmattn.models import jobs

tables.log_to(snakemake.log[0])
jobs.train_model(snakemake.params.spec, snakemake.output.model, snakemake.output.report, snakemake.output.plot)
