from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.offline_tables(list(snakemake.input.shards), snakemake.params.confidence, snakemake.output[0])
