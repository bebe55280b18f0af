"""Running the workflow on a small config in a temporary directory (shared by pipeline tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests import REPO
from vlmattn.metrics import METRICS

SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TINY_CONFIG = {
    "images": {"synthetic": {"size": 64, "scenes": ["triangle_topleft", "square_only"]}},
    "questions": {"top_left": {"text": "Is there anything in the top left corner?",
                               "expected": {"triangle_topleft": "yes", "square_only": "no"}}},
    "models": {"tiny": {"family": "llava", "build": {"kind": "random", "spec": {
        "image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 2, "vision_heads": 2,
        "text_hidden": 64, "text_layers": 2, "text_heads": 4, "text_kv_heads": 2, "vocab_size": 400}}}},
    "extraction": {"max_new_tokens": 3, "resources": {"threads": 1}},
    # every metric, with the schema's defaults (a metric left out of `metrics` is not computed)
    "metrics": {name: {} for name in METRICS},
}


def command(workdir: Path, *args: str, repo: Path = REPO) -> tuple[list[str], dict]:
    """The command line and environment that run the workflow of ``repo`` (its Snakefile and its
    ``vlmattn``) in ``workdir``."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return [*SNAKEMAKE, "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir), *args], env


def snakemake(workdir: Path, *args: str, check: bool = True, repo: Path = REPO) -> subprocess.CompletedProcess:
    """Run the workflow of ``repo`` in ``workdir`` (see :func:`command`)."""
    cmd, env = command(workdir, *args, repo=repo)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def write_config(workdir: Path, config: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def planned_jobs(workdir: Path, *args: str, repo: Path = REPO) -> dict[str, int]:
    """Rule -> job count of a dry run."""
    out = snakemake(workdir, "--dry-run", "--quiet", "rules", *args, repo=repo).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}


def result_tables(workdir: Path) -> dict[str, bytes]:
    """Every table of a run, by path under ``results/``: the CSV tables, the metrics' Parquet shard files
    (``tables/{metric}/{model}/{shard}.parquet``) and the summaries."""
    res = workdir / "results"
    files = [p for d in ("tables", "summaries") for p in (res / d).rglob("*") if p.is_file()]
    return {str(p.relative_to(res)): p.read_bytes() for p in sorted(files) if p.suffix in {".csv", ".parquet"}}
