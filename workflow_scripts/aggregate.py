from vlmattn import tables

tables.log_to(snakemake.log[0])
tables.aggregate(list(snakemake.input.tables), snakemake.output[0])
