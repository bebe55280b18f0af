from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.plot_ablation(list(snakemake.input.tables), snakemake.wildcards.model, snakemake.params.modes,
                      list(snakemake.output))
