"""The workflow on a real SLURM cluster: a single-node slurmctld + slurmd started by the test (as root,
without systemd), the SLURM profile with the CI override ``tests/slurm/profile.yaml``; its tables
equal a local run's byte for byte and SLURM really ran the jobs.

Runs where ``VLMATTN_SLURM_TEST=1`` (``.ci/run`` sets it) and the machine allows it (root, Debian's
packages or apt-get); skipped otherwise. Installs ``munge slurmctld slurmd slurm-client`` if missing.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests import REPO
from tests.pipeline import TINY_CONFIG, result_tables, snakemake, write_config
from tests.slurm_cluster import SingleNodeSlurm, _alive, available, install

pytestmark = [pytest.mark.slurm, pytest.mark.pipeline]
CONFIG = copy.deepcopy(TINY_CONFIG)
CONFIG["images"]["synthetic"]["scenes"] = ["triangle_topleft", "square_only", "green_circle"]
CONFIG["shards"] = 2
CONFIG["extraction"].update(prefill_rows="all_text")
# two metrics, the model jobs of extraction and online pruning (GPU-tagged on a cluster): every SLURM job
# starts a Snakemake process of its own, so the job count sets the test's time
CONFIG["metrics"] = {"concentration": {}, "spatial": {}}
CONFIG["pruning"] = {"prune_layer": 1, "online": {"models": ["tiny"], "n_items": 8, "chunks": 2}}
TIMEOUT = 1200  # seconds for the cluster run


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("VLMATTN_SLURM_TEST") != "1":
        pytest.skip("set VLMATTN_SLURM_TEST=1 to run the workflow on a single-node SLURM (.ci/run does)")
    why = available()
    if why:
        pytest.skip(f"single-node SLURM {why}")
    install()
    root = Path(tempfile.mkdtemp(prefix="vlmattn-slurm-"))  # pytest's tmp dirs are closed to user slurm
    root.chmod(0o755)
    c = SingleNodeSlurm(root)
    try:
        with c:
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert not any(_alive(pid) for pid in c.daemon_pids()), "a SLURM daemon outlived the test"


def test_tables_on_slurm_equal_a_local_run(cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    write_config(local, CONFIG)
    write_config(remote, CONFIG)
    snakemake(local, "--cores", "2")

    cmd = ["timeout", "-k", "30", str(TIMEOUT), sys.executable, "-m", "snakemake", "--snakefile",
           str(REPO / "Snakefile"), "--directory", str(remote), "--profile", str(REPO / "profiles/slurm"),
           "--workflow-profile", str(REPO / "tests/slurm/profile.yaml")]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.monotonic() - t0
    assert done.returncode == 0, (f"exit {done.returncode} after {wall:.0f} s:\n{done.stdout[-3000:]}\n"
                                  f"{done.stderr[-4000:]}")

    tables, remote_tables = result_tables(local), result_tables(remote)
    assert "summaries/concentration.csv" in tables and "tables/answers.csv" in tables
    assert "tables/pruning_study_a.csv" in tables
    assert any(name.startswith("tables/concentration/") for name in tables)
    assert set(remote_tables) == set(tables)
    for name in tables:
        if name == "tables/pruning_speed.csv":  # measured wall times
            continue
        assert remote_tables[name] == tables[name], name

    # SLURM ran them: every job the cluster knows finished, with the rules (or metric groups) named
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%k"], capture_output=True, text=True,
                          check=True).stdout.split()
    states = {j.split("|")[1] for j in jobs}
    comments = " ".join(j.split("|")[2] for j in jobs)
    assert states == {"COMPLETED"}, jobs
    assert "rule_extract" in comments and "rule_metrics" in comments and "rule_summary_concentration" in comments
    assert "rule_pruning_online" in comments
    submitted = len(jobs)
    log = (cluster.log / "slurmctld.log").read_text()
    assert len(re.findall(r"_job_complete: JobId=\d+ done", log)) == submitted
    print(f"\nSLURM run: {submitted} SLURM jobs, {wall:.0f} s wall")
