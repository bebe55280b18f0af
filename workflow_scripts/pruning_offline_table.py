from vlmattn import jobs
from vlmattn.pruning import jobs as pruning

jobs.log_to(snakemake.log[0])
pruning.offline_tables(list(snakemake.input), snakemake.params.confidence, snakemake.output[0])
