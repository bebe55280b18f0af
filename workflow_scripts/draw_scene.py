from vlmattn import jobs

jobs.log_to(snakemake.log[0])
jobs.draw_scene(
    snakemake.wildcards.image,
    snakemake.params.size,
    snakemake.output.png,
    snakemake.output.json,
    shapes=snakemake.params.shapes,
)
