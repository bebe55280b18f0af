from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.learned_chunk(snakemake.params.model, snakemake.params.options, snakemake.params.chunk,
                      list(snakemake.input.pruners), snakemake.output[0], snakemake.threads)
