from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.train_pruner(snakemake.params.model, snakemake.params.options, snakemake.wildcards.variant,
                     snakemake.output.weights, snakemake.output.report, snakemake.threads)
