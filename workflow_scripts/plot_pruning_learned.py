from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.plot_learned(snakemake.input.comparison, snakemake.input.training, snakemake.wildcards.model,
                     snakemake.output.comparison, snakemake.output.training)
