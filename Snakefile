# vlmattn: images x questions x models -> attention capture (HDF5) -> per-metric tables and plots.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/images.smk"
include: "rules/models.smk"
include: "rules/extract.smk"
include: "rules/metrics.smk"
include: "rules/contrasts.smk"
include: "rules/pruning.smk"
include: "rules/attribution.smk"
include: "rules/validation.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
