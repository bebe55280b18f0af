from vlmattn import tables
from vlmattn.models import jobs

tables.log_to(snakemake.log[0])
jobs.build_model(
    snakemake.params.build,
    snakemake.output[0],
    snakemake.threads,
    family=snakemake.params.family,
)
