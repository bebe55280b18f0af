from vlmattn import jobs
from vlmattn.pruning import jobs as pruning

jobs.log_to(snakemake.log[0])
pruning.offline_shard(snakemake.input.index, snakemake.params.options, snakemake.output[0])
