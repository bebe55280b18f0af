from vlmattn import tables
from vlmattn.contrasts import jobs

tables.log_to(snakemake.log[0])
jobs.contrast(snakemake.params.analysis, snakemake.params.files_a, snakemake.params.files_b, snakemake.params.options,
              {"contrast": snakemake.wildcards.contrast, "model": snakemake.wildcards.model}, list(snakemake.output))
