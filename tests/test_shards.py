"""Shards: stable assignment, one model load per shard job, cached samples reused."""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np
from PIL import Image
from scipy import stats

from vlmattn import tables
from vlmattn.config import Sample, extraction_settings, shard_label, shard_of, shard_samples
from vlmattn.extraction import jobs as extraction_jobs

SETTINGS = extraction_settings({"max_new_tokens": 2, "prefill_rows": "last", "attention_dtype": "float16",
                                "vision_encoder": {"enabled": True, "full": False}})


def names(n: int) -> list[str]:
    return [f"img{i}__q{i % 3}" for i in range(n)]


def test_shard_is_a_hash_of_the_name_alone():
    for name in names(50):
        digest = hashlib.sha256(name.encode()).hexdigest()
        assert shard_of(name, 7) == int(digest[:16], 16) % 7
    assert [shard_of("a__b", 16) for _ in range(3)] == [shard_of("a__b", 16)] * 3


def test_shards_are_balanced():
    counts = np.bincount([shard_of(n, 16) for n in names(16_000)], minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_adding_a_sample_changes_one_shard_only():
    before = [Sample("m", *n.split("__")) for n in names(300)]
    after = before + [Sample("m", "new_image", "q1")]
    a, b = shard_samples(before, 8)["m"], shard_samples(after, 8)["m"]
    changed = [k for k in b if a.get(k) != b[k]]
    assert changed == [shard_label(shard_of("new_image__q1", 8), 8)]
    assert all(members == sorted(members, key=lambda s: s.name) for members in b.values())


def test_shard_labels_and_empty_shards():
    assert shard_label(3, 16) == "03" and shard_label(0, 1) == "0" and shard_label(9, 10) == "9"
    by = shard_samples([Sample("m", "a", "q")], 64)["m"]
    assert list(by) == [shard_label(shard_of("a__q", 64), 64)]


def sample(tmp_path, name, colour):
    p = tmp_path / f"{name}.png"
    Image.new("RGB", (40, 30), colour).save(p)
    return {"image_id": name, "question_id": "q", "question": "What colour is the shape?", "image": str(p),
            "annotation": None, "objects": [{"label": "square", "colour": "red", "box": [1, 2, 3, 4]}]}


def test_shard_job_loads_once_and_reuses_the_cache(checkpoint, tmp_path, monkeypatch):
    import vlmattn.engine.inference

    loads = []
    real = vlmattn.engine.inference.load_model
    monkeypatch.setattr(vlmattn.engine.inference, "load_model", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    model = {"id": "m", "family": "llava", "path": str(checkpoint("llava")), "dtype": "float32", "device": "cpu"}
    samples = [sample(tmp_path, n, c) for n, c in (("a", "red"), ("b", "green"), ("c", "blue"))]
    out, cache, index = tmp_path / "attention", tmp_path / "cache", tmp_path / "index.csv"

    def run(members, settings=SETTINGS):
        return extraction_jobs.extract_shard(model, members, settings, 0, str(out), str(index), str(cache))

    assert run(samples[:2]) == {"loaded": 1, "extracted": 2, "reused": 0} and loads == ["m"]
    with h5py.File(out / "a__q.h5") as f:
        assert f.attrs["image_id"] == "a" and f["image/boxes"][()].tolist() == [[1, 2, 3, 4]]
        first = f["attention/decode"][()]
        answer = f.attrs["generated_text"]
    idx = tables.read_index(index)
    assert list(idx.columns) == tables.INDEX_COLUMNS and list(idx["image"]) == ["a", "b"]
    assert idx.loc[0, "file"] == str(out / "a__q.h5") and idx.loc[0, "answer"] == answer
    assert idx.loc[0, "new_tokens"] == "2"
    # the shard gained a sample: one load, one extraction, the others linked from the cache
    assert run(samples) == {"loaded": 1, "extracted": 1, "reused": 2} and len(loads) == 2
    # everything cached: no load at all; files identical to a fresh extraction
    for f in out.glob("*.h5"):
        os.unlink(f)
    assert run(samples) == {"loaded": 0, "extracted": 0, "reused": 3} and len(loads) == 2
    with h5py.File(out / "a__q.h5") as f:
        np.testing.assert_array_equal(f["attention/decode"][()], first)
    # a changed setting is a different cache entry
    assert run(samples[:1], {**SETTINGS, "max_new_tokens": 3})["extracted"] == 1


def test_a_batched_shard_job_writes_what_one_sample_at_a_time_writes(checkpoint, tmp_path, monkeypatch):
    """generation_batch 2 over three samples (a batch of 2, then 1) in the compact layout: the same index
    and, per file, the same tokens and attention as generation_batch 1, within float16 rounding."""
    from vlmattn.store import read_sample

    model = {"id": "m", "family": "llava", "path": str(checkpoint("llava")), "dtype": "float32", "device": "cpu"}
    questions = ["What colour is the shape?", "Colour?", "Is there a shape in the top left corner?"]
    samples = [{**sample(tmp_path, n, c), "question": q}
               for (n, c), q in zip((("a", "red"), ("b", "green"), ("c", "blue")), questions, strict=True)]
    calls = []
    import vlmattn.engine.inference

    real = vlmattn.engine.inference.capture_batch
    monkeypatch.setattr(vlmattn.engine.inference, "capture_batch", lambda lm, ims, *a, **k: calls.append(len(ims)) or
                        real(lm, ims, *a, **k))
    got = {}
    for size in (1, 2):
        out, index = tmp_path / f"att{size}", tmp_path / f"index{size}.csv"
        settings = {**SETTINGS, "generation_batch": size, "layout": "compact"}
        extraction_jobs.extract_shard(model, samples, settings, 0, str(out), str(index), str(tmp_path / f"cache{size}"))
        got[size] = (tables.read_index(index), [read_sample(out / f"{s['image_id']}__q.h5") for s in samples])
    assert calls == [1, 1, 1, 2, 1]
    (i1, one), (i2, two) = got[1], got[2]
    assert (i1.drop(columns=["file", "cache_key"]) == i2.drop(columns=["file", "cache_key"])).all().all()
    assert (i1["cache_key"] != i2["cache_key"]).all()  # the batch size is part of what a file depends on
    for a, b in zip(one, two, strict=True):
        assert a.layout == b.layout == "compact"
        np.testing.assert_array_equal(a.generated_ids, b.generated_ids)
        np.testing.assert_allclose(a.decode_vision, b.decode_vision, atol=1e-3, rtol=1e-3)
        np.testing.assert_allclose(a.decode_segments, b.decode_segments, atol=1e-3, rtol=1e-3)
