"""The validation wing's workflow jobs: the validation table and the report's overview figure."""

from __future__ import annotations

import pandas as pd

from ..tables import one_line_errors, write_table


@one_line_errors()
def validation_table(answers: str, spatial: str, concentration: str, cfg: dict, out: str) -> None:
    """The validation table (:mod:`vlmattn.validation.checks`) from the answers and the spatial and
    concentration summaries."""
    from ..summaries import means, read_summary
    from .checks import validation_table as run

    write_table(run(pd.read_csv(answers), means(read_summary(spatial)), means(read_summary(concentration)), cfg),
                out)


def overview(answers: str, validation: list[str], out: str) -> None:
    """The report's overview figure (:mod:`vlmattn.validation.plots`) from the answers and, when the run has
    one, the validation table."""
    from .plots import draw

    draw(pd.read_csv(answers, dtype={"answer": str}, keep_default_na=False),
         pd.read_csv(validation[0]) if validation else None, out)
