# The report's overview figure: answers and validation checks at a glance (report/workflow.rst is
# the report's landing page).


rule overview:
    input:
        answers=f"{R}/tables/answers.csv",
        validation=([f"{R}/tables/validation.csv"] if config.get("validation") else []),
        code=code_of("overview.py"),
    output:
        report(
            f"{R}/plots/overview.png",
            caption="../report/overview.rst",
            category="1. Overview",
        ),
    log:
        f"{R}/logs/overview.log",
    conda:
        ENV_ANALYSIS
    script:
        "../workflow_scripts/overview.py"
