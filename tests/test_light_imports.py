"""Metric jobs run in their own processes: reading the cache and computing metrics must not import
torch or transformers (seconds per job)."""

import subprocess
import sys

from vlmattn.metrics import METRICS


def test_metric_jobs_do_not_import_torch():
    code = (
        "import sys, vlmattn.tables, vlmattn.metrics.jobs, vlmattn.store, vlmattn.validation.jobs\n"
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


def test_importing_the_engine_registers_nothing_until_a_model_loads(checkpoint):
    """The attention functions join transformers' global interfaces when the first model loads, not
    when the engine is imported."""
    code = (
        "from transformers import AttentionInterface\n"
        "import vlmattn.engine.capture, vlmattn.engine.vision, vlmattn.engine.inference as inf\n"
        "from vlmattn.engine.capture import CAPTURE_IMPL\n"
        "from vlmattn.engine.vision import VISION_IMPL\n"
        "known = lambda: {CAPTURE_IMPL, VISION_IMPL} & set(AttentionInterface._global_mapping)\n"
        "assert known() == set(), known()\n"
        f"inf.load_model('m', 'llava', {str(checkpoint('llava'))!r})\n"
        "assert known() == {CAPTURE_IMPL, VISION_IMPL}, known()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
