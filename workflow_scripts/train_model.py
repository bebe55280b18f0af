from vlmattn import tables
from vlmattn.models import jobs

tables.log_to(snakemake.log[0])
kind = snakemake.config["models"][snakemake.wildcards.model]["build"]["kind"]
jobs.train_model(kind, snakemake.params.spec, snakemake.output.model, snakemake.output.report, snakemake.output.plot)
