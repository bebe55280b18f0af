from vlmattn import tables
from vlmattn.contrasts import jobs

tables.log_to(snakemake.log[0])
jobs.plot_contrast(snakemake.input.heads, snakemake.input.encoder, snakemake.params.files_a, snakemake.params.files_b,
                   snakemake.params.roi, snakemake.params.labels, snakemake.params.title, list(snakemake.output))
