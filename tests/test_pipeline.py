"""The workflow end to end on a tiny config: outputs, incremental reruns, determinism, bad input."""

from __future__ import annotations

import copy

import h5py
import pandas as pd
import pytest
import yaml

from tests.pipeline import TINY_CONFIG, planned_jobs, result_tables, snakemake, write_config
from vlmattn.config import load_dataset, shard_samples
from vlmattn.workflow import load_config

pytestmark = pytest.mark.pipeline
N_LAYERS, N_HEADS = 2, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("run")
    write_config(wd, TINY_CONFIG)
    snakemake(wd, "--cores", "2")
    return wd


def test_outputs(run):
    table = pd.read_parquet(run / "results/tables/concentration")
    # samples x step pooling (last, mean) x layers x (heads + mean + max) x sinks (included, excluded)
    assert set(table["sinks"]) == {"included", "excluded"}
    assert len(table) == 2 * 2 * N_LAYERS * (N_HEADS + 2) * 2
    assert set(table["image"]) == {"triangle_topleft", "square_only"}
    assert table[["entropy", "gini", "effective_span", "vision_share"]].notna().all().all()
    assert (run / "results/plots/concentration_by_layer.png").stat().st_size > 0
    answers = pd.read_csv(run / "results/tables/answers.csv")
    assert list(answers["expected"]) == ["no", "yes"]
    shards = shard_samples(load_dataset(load_config(TINY_CONFIG)).samples, 4)["tiny"]
    for shard in shards:
        for log in [f"extract/tiny/{shard}.log", f"metrics/concentration/tiny/{shard}.log"]:
            assert (run / "results/logs" / log).exists()


def test_no_file_holds_a_full_prefill_matrix(run):
    for h5 in (run / "results/attention/tiny").glob("*.h5"):
        with h5py.File(h5) as f:
            n = len(f["tokens/input_ids"])
            assert f["attention/prefill"].shape == (N_LAYERS, N_HEADS, 1, n)
            assert f["attention/decode"].shape[:3] == (3, N_LAYERS, N_HEADS)


def test_changed_metric_parameter_reruns_only_that_metric(run):
    assert planned_jobs(run) == {}
    changed = copy.deepcopy(TINY_CONFIG)
    changed["metrics"]["concentration"] = {"span_threshold": 0.8}
    cfg = write_config(run / "changed", changed)
    jobs = planned_jobs(run, "--configfile", str(cfg))
    n_shards = len(shard_samples(load_dataset(load_config(TINY_CONFIG)).samples, 4)["tiny"])
    assert jobs == {"metric_concentration": n_shards, "summary_concentration": 1, "plot_concentration": 1, "all": 1}


def test_rerun_gives_byte_identical_tables(run, tmp_path):
    write_config(tmp_path, TINY_CONFIG)
    snakemake(tmp_path, "--cores", "2")
    again, first = result_tables(tmp_path), result_tables(run)
    assert set(again) == set(first) and any(name.endswith(".parquet") for name in first)
    for name in first:
        assert again[name] == first[name], name


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["models"]["tiny"].update(family="gpt9"), "config models.tiny.family: 'gpt9' is not one of"),
        (lambda c: c.update(metrics={"magic": {}}), "config metrics.magic: unknown metric"),
        (lambda c: c["images"].update(files={"photo": {"path": "missing.png"}}), "image file not found: missing.png"),
        (lambda c: c["images"].update(files={"txt": {"path": "config.yaml"}}), "not an image file: config.yaml"),
        (lambda c: c["extraction"].update(prefill_rows="some"), "config extraction.prefill_rows: 'some' is not one of"),
        (lambda c: c.update(sheets=[{"path": "missing.tsv"}]), "sheet missing.tsv: file not found"),
    ],
)
def test_bad_input_fails_fast_with_one_line(tmp_path, mutate, message):
    cfg = copy.deepcopy(TINY_CONFIG)
    mutate(cfg)
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("vlmattn:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg
