"""Exact incremental reruns, on a copy of the repository (so that its modules can be edited): after a
small run of every wing, each edit of a config block or of a library module plans exactly the rules
whose jobs read it, and the rules downstream of them, no more and no fewer.

The expected sets are written by hand from what each job reads (its params, its code, its inputs);
``all`` is in every non-empty plan. The run has two random-weight models (``a`` trained-role, ``b``
untrained-role for the validation), one contrast with its causal check, pruning offline, online and
one learned variant, and attribution on ``a``."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest

from tests import REPO
from tests.pipeline import planned_jobs, snakemake, write_config
from vlmattn.config import load_dataset, shard_samples
from vlmattn.metrics import METRICS
from vlmattn.workflow import load_config

pytestmark = pytest.mark.pipeline

TINY = {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2,
        "text_hidden": 32, "text_layers": 2, "text_heads": 2, "text_kv_heads": 1, "vocab_size": 400}
CONFIG = {
    "images": {"synthetic": {"size": 64, "scenes": ["triangle_topleft", "square_only", "blue_square_right"]}},
    "questions": {"top_left": {"text": "Is there anything in the top left corner?",
                               "expected": {"triangle_topleft": "yes", "square_only": "no"}},
                  "shape": {"text": "What shape is in the image?", "images": ["square_only"],
                            "expected": {"square_only": "square"}}},
    "models": {"a": {"family": "llava", "build": {"kind": "random", "spec": {**TINY, "seed": 0}}},
               "b": {"family": "llava", "build": {"kind": "random", "spec": {**TINY, "seed": 1}}}},
    "extraction": {"max_new_tokens": 2, "prefill_rows": "all_text", "resources": {"threads": 1}},
    "shards": 2,
    "sample_figures": 1,
    "metrics": {name: {} for name in METRICS},
    "validation": {"trained": "a", "untrained": "b", "object_questions": ["shape"]},
    "contrasts": {"tl": {"question": "top_left", "pairs": [["triangle_topleft", "square_only"]], "roi": "top_left",
                         "statistics": {"n_resamples": 99}, "causal": {"ks": [1], "n_random": 2}}},
    "pruning": {"prune_layer": 1, "encoder_layer": -1, "n_heads": 1, "random": {"draws": 1},
                "online": {"models": ["a"], "n_items": 2, "chunks": 1, "max_new_tokens": 1},
                "learned": {"enabled": True, "dim": 16, "n_heads": 2,
                            "variants": [{"name": "plain", "use_attn_residual": False}],
                            "train": {"steps": 2, "batch_size": 2, "log_every": 1, "render_size": 64}}},
    "attribution": {"models": ["a"], "questions": ["shape"], "integrated_gradients": {"n_steps": 2, "pixel_steps": 2,
                                                                                       "batch": 2},
                    "modality_gap": {"tokens_per_sample": 2, "folds": 2},
                    "faithfulness": {"fractions": [0.5], "n_resamples": 99}, "overlays": 1},
}

# ----------------------------------------------------------------------------- the expected plans
# What each edit reruns, by the jobs that read it (rule names; every plan also has `all`).
SAMPLE_FIGURES = {"spatial", "head_clusters"}  # the metrics that draw per-sample figures


def metric_jobs(name: str) -> set[str]:
    """A metric's own jobs, and the validation (and the overview it feeds) when it reads the summary."""
    jobs = {f"metric_{name}", f"summary_{name}", f"plot_{name}"}
    jobs |= {f"figures_{name}"} if name in SAMPLE_FIGURES else set()
    return jobs | ({"validation_table", "overview"} if name in ("spatial", "concentration") else set())


ALL_METRICS = set().union(*(metric_jobs(m) for m in METRICS))
CONTRAST_TABLES = {"heads": ["contrast_heads"], "quadrants": ["contrast_quadrants"],
                   "divergence": ["contrast_divergence", "contrast_divergence_summary"],
                   "encoder": ["contrast_encoder", "contrast_encoder_divergence",
                               "contrast_encoder_divergence_summary"],
                   "rollout": ["contrast_rollout"]}
# the contrast figures: plot_contrast reads the heads and the encoder divergence tables
CONTRAST_PLOTTED = {"heads", "encoder"}


def analysis_jobs(*analyses: str) -> set[str]:
    jobs = set()
    for a in analyses:
        jobs |= {f"contrast_{a}"} | {f"table_{t}" for t in CONTRAST_TABLES[a]}
        jobs |= {"plot_contrast"} if a in CONTRAST_PLOTTED else set()
    return jobs


CAUSAL = {"contrast_causal", "table_contrast_causal", "table_contrast_causal_draws", "table_contrast_causal_heads",
          "plot_causal"}
OFFLINE = {"pruning_offline", "table_pruning_offline", "plot_pruning_offline"}
ONLINE = {"pruning_online", "table_pruning", "plot_pruning"}
LEARNED_TABLES = {"table_pruning_learned", "plot_pruning_learned"}
LEARNED = {"pruning_learned"} | LEARNED_TABLES
TRAIN = {"train_pruner"} | LEARNED
ATTRIBUTION = {"attribute", "table_attribution", "plot_attribution"}
EXTRACTED = ({"extract", "answers", "overview"} | ALL_METRICS | analysis_jobs(*CONTRAST_TABLES) | CAUSAL | OFFLINE
             | ATTRIBUTION)

# (what, edit, expected rules); a config edit is (block path, key, new value), a module edit a path
CONFIG_EDITS = [
    *[(f"metrics.{m}", ("metrics", m, "min_vision_share"), 0.001, metric_jobs(m)) for m in METRICS if m != "sinks"],
    # the sink rule: every metric excludes sinks (schema default "both"), so each reads it
    ("metrics.sinks", ("metrics", "sinks", "ratio"), 6, ALL_METRICS),
    ("contrasts.tl.heads", ("contrasts", "tl", "roi"), "top_right",
     analysis_jobs("heads", "encoder", "rollout") | CAUSAL),
    ("contrasts.tl.quadrants", ("contrasts", "tl", "head_pooling"), "max", analysis_jobs("quadrants", "divergence")),
    ("contrasts.tl.divergence", ("contrasts", "tl", "divergence", "epsilon"), 1e-5,
     analysis_jobs("divergence", "encoder")),
    ("contrasts.tl.encoder", ("contrasts", "tl", "encoder", "head_pooling"), "max", analysis_jobs("encoder")),
    ("contrasts.tl.rollout", ("contrasts", "tl", "rollout", "source"), "received", analysis_jobs("rollout")),
    ("contrasts.tl.statistics", ("contrasts", "tl", "statistics", "n_resamples"), 199,
     analysis_jobs(*CONTRAST_TABLES) | CAUSAL),
    ("contrasts.tl.causal", ("contrasts", "tl", "causal", "n_random"), 3, CAUSAL),
    ("pruning.offline", ("pruning", "offline", "step"), 1, OFFLINE),
    ("pruning.online", ("pruning", "online", "n_items"), 3, ONLINE | LEARNED),
    ("pruning.learned.train", ("pruning", "learned", "train", "steps"), 3, TRAIN),
    # the online and learned tables read both statistics options, the offline summary the confidence only
    ("pruning.statistics.alpha", ("pruning", "statistics", "alpha"), 0.1,
     {"table_pruning", "plot_pruning"} | LEARNED_TABLES),
    ("pruning.statistics.confidence", ("pruning", "statistics", "confidence"), 0.9,
     {"table_pruning", "plot_pruning", "table_pruning_offline", "plot_pruning_offline"} | LEARNED_TABLES),
    ("attribution", ("attribution", "faithfulness", "fractions"), [0.25], {"attribute", "table_attribution",
                                                                           "plot_attribution"}),
    ("attribution.faithfulness.n_resamples", ("attribution", "faithfulness", "n_resamples"), 199,
     {"table_attribution", "plot_attribution"}),
    ("extraction", ("extraction", "max_new_tokens"), 3, EXTRACTED),
    ("validation", ("validation", "min_object_lift"), 3.0, {"validation_table", "overview"}),
]
MODULE_EDITS = [
    # the online evaluation scores tokens through the offline scorers, which read maps
    ("vlmattn/maps.py",
     ALL_METRICS | analysis_jobs(*CONTRAST_TABLES) | CAUSAL | OFFLINE | ATTRIBUTION | ONLINE | LEARNED),
    ("vlmattn/pruning/flops.py", ONLINE | LEARNED),
    # every job that reads or builds a cached sample (the engine builds them: online runs, pruner training)
    ("vlmattn/store.py", EXTRACTED | ONLINE | TRAIN),
    ("vlmattn/engine/capture.py", EXTRACTED | ONLINE | TRAIN),
    ("vlmattn/pruning/plots.py", {"plot_pruning_offline", "plot_pruning", "plot_pruning_learned"}),
    ("vlmattn/metrics/hotspots.py", metric_jobs("hotspots")),
    ("vlmattn/contrasts/quadrants.py", analysis_jobs("quadrants")),
    ("vlmattn/pruning/stats.py", {"table_pruning", "plot_pruning"} | LEARNED_TABLES),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A copy of the repository's workflow and library with the small run done."""
    wd = tmp_path_factory.mktemp("reruns")
    for item in ("Snakefile", "rules", "workflow_scripts", "envs", "report", "vlmattn"):
        src = REPO / item
        (shutil.copytree(src, wd / item, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy(src, wd / item))
    write_config(wd, CONFIG)
    snakemake(wd, "--cores", "2", repo=wd)
    return wd


def plan(wd: Path) -> set[str]:
    return set(planned_jobs(wd, repo=wd))


def with_edit(config: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(config)
    block = out
    for key in path[:-1]:
        block = block.setdefault(key, {})
    block[path[-1]] = value
    return out


def test_nothing_to_do_after_the_run(run):
    assert plan(run) == set()


@pytest.mark.parametrize("what, path, value, expected", CONFIG_EDITS, ids=[e[0] for e in CONFIG_EDITS])
def test_config_edit_reruns_exactly_its_readers(run, what, path, value, expected):
    write_config(run, with_edit(CONFIG, path, value))
    try:
        assert plan(run) == expected | {"all"}
    finally:
        write_config(run, CONFIG)


@pytest.mark.parametrize("module, expected", MODULE_EDITS, ids=[e[0] for e in MODULE_EDITS])
def test_module_edit_reruns_exactly_its_readers(run, module, expected):
    path = run / module
    text, stat = path.read_text(), path.stat()
    path.write_text(text + "\n# edited\n")
    try:
        assert plan(run) == expected | {"all"}
    finally:
        path.write_text(text)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_added_sample_reruns_one_shard_per_model(run):
    """Adding one sample reruns one extraction job per model (which runs the model on that sample
    alone, the others read from the cache) and one job per (metric, model)."""
    cfg = copy.deepcopy(CONFIG)
    cfg["questions"]["shape"]["images"].append("blue_square_right")

    def shards(c):
        return shard_samples(load_dataset(load_config(c)).samples, c["shards"])

    before, after = shards(CONFIG), shards(cfg)
    changed = {m: [k for k in after[m] if before[m].get(k) != after[m][k]] for m in after}
    assert all(len(ks) == 1 for ks in changed.values()), changed
    write_config(run, cfg)
    try:
        jobs = planned_jobs(run, repo=run)
        assert jobs["extract"] == 2 and jobs["metric_concentration"] == 2 and jobs["metric_spatial"] == 2, jobs
        assert not {"build_model", "draw_scene"} & set(jobs), jobs
        # the extraction jobs alone (what runs downstream is the plan above)
        targets = [f"results/attention/{model}/shards/{shard}.csv" for model, (shard,) in changed.items()]
        snakemake(run, "--cores", "2", *targets, repo=run)
        for model, (shard,) in changed.items():
            log = (run / f"results/logs/extract/{model}/{shard}.log").read_text()
            n_old = len(after[model][shard]) - 1
            assert f"1 extracted, {n_old} from cache, model loaded 1 time" in log, log[-2000:]
    finally:
        write_config(run, CONFIG)
