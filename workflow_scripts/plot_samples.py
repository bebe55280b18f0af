from vlmattn import tables
from vlmattn.metrics import jobs

tables.log_to(snakemake.log[0])
jobs.plot_samples(snakemake.params.metric, snakemake.params.samples, snakemake.params.cfg)
