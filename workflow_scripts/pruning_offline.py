from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.offline_shard(snakemake.input.index, snakemake.params.options, snakemake.output[0])
