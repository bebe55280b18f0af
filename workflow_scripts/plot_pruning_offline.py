from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.plot_offline(snakemake.input.table, snakemake.wildcards.model, snakemake.output[0])
