"""Incremental guarantees of the sharded workflow, on a copy of the repository (so that a metric's
module can be edited): an unchanged config plans nothing; editing one metric's module reruns that
metric's jobs alone, one contrast analysis's module its jobs alone, and the pruning statistics their
tables alone (not the model runs); adding one sample reruns one extraction job per model (which runs
the model on that sample alone) and one job per (metric, model)."""

from __future__ import annotations

import copy
import os
import shutil

import pytest

from tests.pipeline import REPO, planned_jobs, snakemake, write_config
from vlmattn.config import load_config, load_dataset, shard_samples

pytestmark = pytest.mark.pipeline
TINY = {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2,
        "text_hidden": 32, "text_layers": 2, "text_heads": 2, "text_kv_heads": 1, "vocab_size": 400}
CONFIG = {
    "images": {"synthetic": {"size": 64, "scenes": ["triangle_topleft", "square_only", "blue_square_right"]}},
    "questions": {"top_left": {"text": "Is there anything in the top left corner?"},
                  "shape": {"text": "What shape is in the image?", "images": ["square_only"]}},
    "models": {"a": {"family": "llava", "build": {"kind": "random", "spec": {**TINY, "seed": 0}}},
               "b": {"family": "llava", "build": {"kind": "random", "spec": {**TINY, "seed": 1}}}},
    "extraction": {"max_new_tokens": 2, "prefill_rows": "all_text", "resources": {"threads": 1}},
    "shards": 4,
    "pruning": {"prune_layer": 1, "encoder_layer": -1, "n_heads": 1, "online": {"models": ["a"], "n_items": 4}},
    "metrics": {"concentration": {}, "spatial": {}},
    "contrasts": {"tl": {"question": "top_left", "pairs": [["triangle_topleft", "square_only"]], "roi": "top_left",
                         "statistics": {"n_resamples": 99}, "causal": {"enabled": False}}},
}


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    wd = tmp_path_factory.mktemp("incremental")
    for item in ("Snakefile", "rules", "workflow_scripts", "envs", "report", "schemas", "vlmattn"):
        src = REPO / item
        (shutil.copytree(src, wd / item, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy(src, wd / item))
    write_config(wd, CONFIG)
    snakemake(wd, "--cores", "2", repo=wd)
    return wd


def shards(config: dict) -> dict:
    return shard_samples(load_dataset(load_config(config)).samples, config["shards"])


def test_unchanged_config_plans_nothing(repo_copy):
    assert planned_jobs(repo_copy, repo=repo_copy) == {}


def test_edited_metric_module_reruns_that_metric_alone(repo_copy):
    module = repo_copy / "vlmattn/metrics/concentration.py"
    text, stat = module.read_text(), module.stat()
    module.write_text(text + "\n# edited\n")
    try:
        n = sum(len(by) for by in shards(CONFIG).values())
        assert planned_jobs(repo_copy, repo=repo_copy) == {"metric_concentration": n, "table_concentration": 1,
                                           "plot_concentration": 1, "all": 1}
    finally:
        module.write_text(text)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(repo_copy, repo=repo_copy) == {}


def test_edited_contrast_module_reruns_that_analysis_alone(repo_copy):
    module = repo_copy / "vlmattn/contrasts/quadrants.py"
    text, stat = module.read_text(), module.stat()
    module.write_text(text + "\n# edited\n")
    try:
        assert planned_jobs(repo_copy, repo=repo_copy) == {"contrast_quadrants": 2, "table_contrast_quadrants": 1,
                                                           "all": 1}
    finally:
        module.write_text(text)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(repo_copy, repo=repo_copy) == {}


def test_edited_pruning_statistics_rerun_the_tables_alone(repo_copy):
    module = repo_copy / "vlmattn/pruning/stats.py"
    text, stat = module.read_text(), module.stat()
    module.write_text(text + "\n# edited\n")
    try:
        assert planned_jobs(repo_copy, repo=repo_copy) == {"table_pruning": 1, "plot_pruning": 1, "all": 1}
    finally:
        module.write_text(text)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(repo_copy, repo=repo_copy) == {}


def test_added_sample_reruns_one_shard_per_model(repo_copy):
    cfg = copy.deepcopy(CONFIG)
    cfg["questions"]["shape"]["images"].append("blue_square_right")
    before, after = shards(CONFIG), shards(cfg)
    changed = {m: [k for k in after[m] if before[m].get(k) != after[m][k]] for m in after}
    assert all(len(ks) == 1 for ks in changed.values()), changed
    write_config(repo_copy, cfg)
    jobs = planned_jobs(repo_copy, repo=repo_copy)
    assert jobs["extract"] == 2 and jobs["metric_concentration"] == 2 and jobs["metric_spatial"] == 2, jobs
    assert not {"build_model", "draw_scene"} & set(jobs), jobs
    snakemake(repo_copy, "--cores", "2", repo=repo_copy)
    for model, (shard,) in changed.items():
        log = (repo_copy / f"results/logs/extract/{model}/{shard}.log").read_text()
        n_old = len(after[model][shard]) - 1
        assert f"1 extracted, {n_old} from cache, model loaded 1 time" in log, log[-2000:]
    assert planned_jobs(repo_copy, repo=repo_copy) == {}
