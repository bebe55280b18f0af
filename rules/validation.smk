# Checks of the trained toy model against its untrained twin, from the pipeline's own tables.


rule validate:
    input:
        answers=f"{R}/tables/answers.csv",
        spatial=f"{R}/tables/spatial.csv",
        concentration=f"{R}/tables/concentration.csv",
        code=LIB / "validation.py",
    output:
        report(
            f"{R}/tables/validation.csv",
            caption="../report/validation.rst",
            category="1. Overview",
        ),
    log:
        f"{R}/logs/validate.log",
    conda:
        ENV_ANALYSIS
    params:
        cfg=config.get("validation", {}),
    script:
        "../workflow_scripts/validate.py"
