from vlmattn import tables
from vlmattn.images import jobs

tables.log_to(snakemake.log[0])
jobs.draw_scene(
    snakemake.wildcards.image,
    snakemake.params.size,
    snakemake.output.png,
    snakemake.output.json,
    shapes=snakemake.params.shapes,
)
