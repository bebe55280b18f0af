from vlmattn import tables
from vlmattn.extraction import jobs

tables.log_to(snakemake.log[0])
jobs.answers(list(snakemake.input.indexes), snakemake.params.expected, snakemake.output[0])
