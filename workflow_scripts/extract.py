from vlmattn import jobs

jobs.log_to(snakemake.log[0])
w = snakemake.wildcards
jobs.extract(
    model=snakemake.params.model,
    image=snakemake.input.image,
    objects=jobs.load_objects(snakemake.input.annotation or None, snakemake.params.objects),
    question_id=w.question,
    image_id=w.image,
    question=snakemake.params.question,
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    out=snakemake.output[0],
    threads=snakemake.threads,
)
