from vlmattn import tables
from vlmattn.pruning import jobs as pruning

tables.log_to(snakemake.log[0])
pruning.online_tables(
    list(snakemake.input.chunks), snakemake.params.statistics, snakemake.params.convention, list(snakemake.output)
)
