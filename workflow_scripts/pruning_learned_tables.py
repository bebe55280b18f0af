from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.learned_tables(list(snakemake.input.online), list(snakemake.input.learned), list(snakemake.input.reports),
                       snakemake.params.statistics, snakemake.output.comparison, snakemake.output.training)
