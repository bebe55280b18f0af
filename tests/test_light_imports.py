"""Metric jobs run in their own processes: reading the cache and computing metrics must not import
torch or transformers (seconds per job)."""

import subprocess
import sys

from vlmattn.metrics import METRICS


def test_metric_jobs_do_not_import_torch():
    code = (
        "import sys, vlmattn.jobs, vlmattn.store, vlmattn.validation\n"
        f"from vlmattn.metrics import get_metric\n[get_metric(m) for m in {list(METRICS)!r}]\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pruning_analysis_jobs_do_not_import_torch():
    """The offline scores, tables and figures of the pruning ablations run in the analysis environment."""
    code = (
        "import sys, vlmattn.pruning.jobs, vlmattn.pruning.offline, vlmattn.pruning.stats, vlmattn.pruning.plots\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_attribution_analysis_jobs_do_not_import_torch():
    """The attribution tables and figures run in the analysis environment."""
    code = (
        "import sys, vlmattn.attribution.jobs as j, vlmattn.attribution.store, vlmattn.attribution.plots\n"
        "import vlmattn.attribution.faithfulness, vlmattn.attribution.alignment, vlmattn.attribution.modality_gap\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
