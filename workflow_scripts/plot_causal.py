from vlmattn import tables
from vlmattn.contrasts import jobs

tables.log_to(snakemake.log[0])
jobs.plot_causal(snakemake.input.causal, snakemake.input.draws, snakemake.params.title, snakemake.output[0])
