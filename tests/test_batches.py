"""Extraction batches: deterministic membership, one model load per batch, cached samples reused."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from vlmattn import jobs
from vlmattn.config import extraction_batches, load_config

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"max_new_tokens": 2, "prefill_rows": "last", "attention_dtype": "float16",
            "vision_encoder": {"enabled": True, "full": False}}


def config(n_questions: int, batch_size: int) -> dict:
    qs = {f"q{i}": {"text": f"What shape {i}?"} for i in range(n_questions)}
    return load_config({
        "questions": qs,
        "models": {"a": {"family": "llava", "build": {"kind": "random"}},
                   "b": {"family": "qwen2_vl", "build": {"kind": "random"}}},
        "images": {"synthetic": {"scenes": ["green_circle", "square_only"]}},
        "extraction": {"batch_size": batch_size},
    })


def test_batches_are_sorted_runs_of_batch_size():
    cfg = config(5, 3)  # 10 samples per model
    batches = extraction_batches(cfg)
    assert set(batches) == {"a", "b"}
    for model, runs in batches.items():
        flat = [s for run in runs for s in run]
        assert len(runs) == math.ceil(10 / 3) and all(len(r) <= 3 for r in runs)
        assert flat == sorted(flat, key=lambda s: (s.image, s.question))
        assert {s.model for s in flat} == {model}
    assert extraction_batches(cfg) == batches


def sample(tmp_path, name, colour):
    p = tmp_path / f"{name}.png"
    Image.new("RGB", (40, 30), colour).save(p)
    return {"image_id": name, "question_id": "q", "question": "What colour is the shape?", "image": str(p),
            "annotation": None, "objects": [{"label": "square", "colour": "red", "box": [1, 2, 3, 4]}]}


def test_batch_loads_once_and_reuses_the_cache(checkpoint, tmp_path, monkeypatch):
    import vlmattn.extract

    loads = []
    real = vlmattn.extract.load_model
    monkeypatch.setattr(vlmattn.extract, "load_model", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    model = {"id": "m", "family": "llava", "path": str(checkpoint("llava")), "dtype": "float32", "device": "cpu"}
    samples = [sample(tmp_path, n, c) for n, c in (("a", "red"), ("b", "green"), ("c", "blue"))]
    outs = [str(tmp_path / "out" / f"{s['image_id']}__q.h5") for s in samples]
    cache = tmp_path / "cache"
    stats = jobs.extract_batch(model, samples[:2], SETTINGS, 0, outs[:2], str(cache))
    assert stats == {"loaded": 1, "extracted": 2, "reused": 0} and loads == ["m"]
    with h5py.File(outs[0]) as f:
        assert f.attrs["image_id"] == "a" and f["image/boxes"][()].tolist() == [[1, 2, 3, 4]]
        first = f["attention/decode"][()]
    # a shifted batch (one new sample, one already extracted): one load, one extraction
    stats = jobs.extract_batch(model, samples[1:], SETTINGS, 0, outs[1:], str(cache))
    assert stats == {"loaded": 1, "extracted": 1, "reused": 1} and len(loads) == 2
    # everything cached: no load at all; files identical to a fresh extraction
    for o in outs:
        os.unlink(o)
    stats = jobs.extract_batch(model, samples, SETTINGS, 0, outs, str(cache))
    assert stats == {"loaded": 0, "extracted": 0, "reused": 3} and len(loads) == 2
    with h5py.File(outs[0]) as f:
        np.testing.assert_array_equal(f["attention/decode"][()], first)
    # a changed setting is a different cache entry
    stats = jobs.extract_batch(model, samples[:1], {**SETTINGS, "max_new_tokens": 3}, 0, outs[:1], str(cache))
    assert stats["extracted"] == 1


@pytest.mark.pipeline
def test_pipeline_adds_a_sample_with_at_most_one_batch_extracted(tmp_path):
    """3 samples, B = 2 → 2 extraction jobs, one model load each; adding a sample that sorts first
    shifts the second batch, which is served from the cache without loading the model."""
    for item in ("Snakefile", "rules", "workflow_scripts", "envs", "report", "schemas"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    (tmp_path / "vlmattn").symlink_to(ROOT / "vlmattn")
    for name, colour in (("green", "green"), ("red", "red")):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{name}.png")
    cfg = {
        "images": {"synthetic": {"scenes": []},
                   "files": {"green": {"path": "green.png"}, "red": {"path": "red.png"}}},
        "questions": {"shape": {"text": "What shape is in the image?", "images": ["green", "red"]},
                      "colour": {"text": "What colour is the shape?", "images": ["red"]}},
        "models": {"tiny": {"family": "llava", "build": {"kind": "random", "spec": {
            "image_size": 32, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2,
            "text_hidden": 32, "text_layers": 1, "text_heads": 2, "text_kv_heads": 1}}}},
        "extraction": {"max_new_tokens": 2, "batch_size": 2, "resources": {"threads": 1}},
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    snakemake = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2"]

    def run():
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        targets = [f"results/attention/tiny/{i}__{q}.h5" for q, c in cfg["questions"].items() for i in c["images"]]
        done = subprocess.run(snakemake + targets, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        logs = sorted((tmp_path / "results/logs/extract/tiny").glob("batch*.log"))
        return [next(line for line in p.read_text().splitlines() if "model tiny:" in line) for p in logs]

    first = run()
    assert len(first) == 2 and all("loaded 1 time" in line for line in first)
    cfg["questions"]["colour"]["images"].insert(0, "green")  # green__colour sorts first
    second = run()
    assert "1 extracted, 1 from cache, model loaded 1 time" in second[0]
    assert "0 extracted, 2 from cache, model loaded 0 time" in second[1]
    assert len(list((tmp_path / "results/attention/tiny").glob("*.h5"))) == 4
