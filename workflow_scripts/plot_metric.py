from pathlib import Path

from vlmattn import tables
from vlmattn.metrics import jobs

tables.log_to(snakemake.log[0])
jobs.plot(snakemake.params.metric, snakemake.input.summary, snakemake.params.cfg, Path(snakemake.output[0]).parent,
          snakemake.params.extras)
