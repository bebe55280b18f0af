from vlmattn import tables
from vlmattn.attribution import jobs as attribution

tables.log_to(snakemake.log[0])
attribution.attribution_tables(snakemake.input.indexes, snakemake.input.curves, snakemake.input.separability,
                               snakemake.params.statistics, snakemake.params.seed, list(snakemake.output))
