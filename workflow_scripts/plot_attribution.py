from vlmattn import tables
from vlmattn.attribution import jobs as attribution

tables.log_to(snakemake.log[0])
attribution.plot_attribution(snakemake.wildcards.model, snakemake.input.samples, snakemake.input.curves,
                             snakemake.input.gaps, snakemake.input.alignment, snakemake.params.overlays,
                             dict(snakemake.output.items()))
