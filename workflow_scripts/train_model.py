from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.train_model(snakemake.params.spec, snakemake.output.model, snakemake.output.report, snakemake.output.plot)
