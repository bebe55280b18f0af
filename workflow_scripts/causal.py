from vlmattn import tables
from vlmattn.contrasts import jobs

tables.log_to(snakemake.log[0])
jobs.causal(snakemake.params.model, snakemake.params.a_items, snakemake.input.heads, snakemake.params.options,
            {"contrast": snakemake.wildcards.contrast, "model": snakemake.wildcards.model}, list(snakemake.output),
            snakemake.threads)
