from pathlib import Path

from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.plot_sample(
    snakemake.params.metric,
    snakemake.input.h5,
    snakemake.input.image,
    snakemake.params.cfg,
    Path(snakemake.output[0]).parent,
)
