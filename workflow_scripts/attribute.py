from vlmattn import tables
from vlmattn.attribution import jobs as attribution

tables.log_to(snakemake.log[0])
attribution.attribute_shard(snakemake.params.model, snakemake.input.index, snakemake.params.questions,
                            snakemake.params.options, snakemake.params.out_dir, dict(snakemake.output.items()),
                            snakemake.threads)
