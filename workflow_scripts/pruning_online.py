from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.online_chunk(snakemake.params.model, snakemake.params.options, snakemake.params.chunk, snakemake.output[0],
                     snakemake.threads)
