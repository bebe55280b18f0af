from vlmattn import jobs

jobs.log_to(snakemake.log[0])
i = snakemake.input
jobs.validate(i.answers, i.spatial, i.concentration, snakemake.params.cfg, snakemake.output[0])
