"""Faults: a job killed with SIGKILL mid-run, then ``snakemake --rerun-incomplete``, gives tables
byte-identical to an uninterrupted run; a second run on the same results while one is running is
refused by Snakemake's lock and corrupts nothing."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.pipeline import TINY_CONFIG, command, result_tables, snakemake, write_config

pytestmark = pytest.mark.pipeline
CONFIG = copy.deepcopy(TINY_CONFIG)
CONFIG["images"]["synthetic"]["scenes"] = ["triangle_topleft", "square_only", "green_circle"]
CONFIG["metrics"] = {"concentration": {}, "spatial": {}}


def start(workdir, *args) -> subprocess.Popen:
    """The workflow running in the background in ``workdir``."""
    cmd, env = command(workdir, *args)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def kill_job(run: subprocess.Popen, script: str, timeout: float = 300) -> None:
    """SIGKILL the first job process of ``run`` running ``workflow_scripts/{script}``."""
    deadline = time.monotonic() + timeout
    parent = psutil.Process(run.pid)
    while time.monotonic() < deadline and run.poll() is None:
        for p in parent.children(recursive=True):
            try:
                if any(arg.endswith(f".{script}") for arg in p.cmdline()):
                    os.kill(p.pid, signal.SIGKILL)
                    return
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.02)
    raise AssertionError(f"no {script} job was seen running")


def tables(workdir) -> dict[str, bytes]:
    return result_tables(workdir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = tmp_path_factory.mktemp("reference")
    write_config(wd, CONFIG)
    snakemake(wd, "--cores", "2")
    return tables(wd)


@pytest.mark.parametrize("script", ["extract.py", "metric.py"])
def test_killed_job_then_rerun_incomplete(reference, tmp_path, script):
    write_config(tmp_path, CONFIG)
    run = start(tmp_path, "--cores", "1")
    kill_job(run, script)
    out = run.communicate(timeout=600)[0]
    assert run.returncode != 0, out[-2000:]
    assert "Error in rule" in out
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete")
    assert tables(tmp_path) == reference
    assert not list((tmp_path / "results").rglob(".*.tmp"))


def test_second_run_on_the_same_results_is_refused(reference, tmp_path):
    write_config(tmp_path, CONFIG)
    first = start(tmp_path, "--cores", "1")
    locks = tmp_path / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second could start"
    second = snakemake(tmp_path, "--cores", "1", check=False)
    assert second.returncode != 0
    assert "cannot be locked" in second.stdout + second.stderr
    out = first.communicate(timeout=600)[0]
    assert first.returncode == 0, out[-3000:]
    assert tables(tmp_path) == reference
    cached = list((tmp_path / "results/cache/extract/tiny").glob("*.h5"))
    assert len(cached) == 3 and not list((tmp_path / "results").rglob(".*.tmp"))
