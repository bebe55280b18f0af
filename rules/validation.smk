# Checks of the trained toy model against its untrained twin, from the pipeline's own tables.


rule validation_table:
    input:
        answers=f"{R}/tables/answers.csv",
        spatial=summary_file("spatial"),
        concentration=summary_file("concentration"),
        code=code_of("validation_table.py"),
    output:
        report(
            f"{R}/tables/validation.csv",
            caption="../report/validation.rst",
            category="1. Overview",
        ),
    log:
        f"{R}/logs/validation.log",
    conda:
        ENV_ANALYSIS
    params:
        cfg=config.get("validation", {}),
    script:
        "../workflow_scripts/validation_table.py"
