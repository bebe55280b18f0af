"""Editing the spatial metric's config reruns the spatial jobs and nothing else."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPATIAL_JOBS = {"metric_spatial", "table_spatial", "plot_spatial", "figures_spatial"}

CONFIG = """
seed: 0
results: results
images:
  synthetic: {size: 64, scenes: [triangle_topleft]}
questions:
  top_left: {text: "Is there anything in the top left corner?"}
models:
  toy:
    family: llava
    build:
      kind: random
      spec: {seed: 0, image_size: 32, patch_size: 8, vision_hidden: 32, vision_layers: 1, vision_heads: 2,
             text_hidden: 32, text_layers: 2, text_heads: 2, text_kv_heads: 1}
extraction: {max_new_tokens: 2}
metrics:
  head_clusters: {k: 2, n_init: 1}
  spatial: {regions: {centre: [0.25, 0.25, 0.75, 0.75]}}
"""


def snakemake(workdir: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def planned_jobs(workdir: Path) -> set[str]:
    """Rule names in the job statistics of a dry run (empty when nothing is to be done)."""
    log = snakemake(workdir, "--dry-run")
    if "Job stats:" not in log:
        assert "Nothing to be done" in log, log[-2000:]
        return set()
    table = log.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"all", "total"}


@pytest.mark.pipeline
def test_spatial_config_change_reruns_only_spatial(tmp_path):
    (tmp_path / "config.yaml").write_text(textwrap.dedent(CONFIG))
    snakemake(tmp_path)
    assert (tmp_path / "results/tables/spatial.csv").is_file()
    assert (tmp_path / "results/plots/samples/toy/triangle_topleft__top_left/spatial_overlay.png").is_file()
    assert planned_jobs(tmp_path) == set()

    cfg = (tmp_path / "config.yaml").read_text()
    cfg = cfg.replace("centre: [0.25, 0.25, 0.75, 0.75]", "middle: [0.3, 0.3, 0.7, 0.7]")
    (tmp_path / "config.yaml").write_text(cfg)
    assert planned_jobs(tmp_path) == SPATIAL_JOBS
    summary = snakemake(tmp_path, "--summary")
    changed = {line.split("\t")[0] for line in summary.splitlines() if "\t" in line and "update pending" in line}
    assert changed and all("spatial" in Path(p).name or "/spatial/" in p for p in changed), changed
