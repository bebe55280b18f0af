from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.plot_causal(snakemake.input.causal, snakemake.input.draws, snakemake.params.title, snakemake.output[0])
