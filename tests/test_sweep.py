"""Bad input, swept: each case must stop with one line that names the bad input, and leave nothing
half-written. Three stages, as the workflow meets them:

* ``config``: before any job starts (``load_config`` + ``load_dataset``, what the Snakefile runs);
* ``extract``: an extraction job (``extraction_jobs.extract_shard``): no HDF5 file, no shard index;
* ``metric``: a metric job reading the cache (``metric_jobs.metric``): no table.
"""

from __future__ import annotations

import copy
import json
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from tests.synthetic_attention import make_sample, tile
from vlmattn import tables
from vlmattn.config import extraction_settings, load_dataset
from vlmattn.errors import VlmattnError
from vlmattn.extraction import jobs as extraction_jobs
from vlmattn.metrics import jobs as metric_jobs
from vlmattn.models import toy
from vlmattn.store import write_sample
from vlmattn.workflow import load_config

BASE = {"images": {"synthetic": {"scenes": ["square_only"]}},
        "questions": {"q": {"text": "What shape is in the image?"}},
        "models": {"m": {"family": "llava", "path": "ckpt"}}}
SETTINGS = extraction_settings({"max_new_tokens": 2, "prefill_rows": "last", "attention_dtype": "float16",
                                "vision_encoder": {"enabled": True, "full": False, "rollout": True}})


def png(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "red").save(path)
    return path


def with_file(tmp, name, make):
    """Config with one user image ``name`` made by ``make(path)``."""
    make(tmp / name)
    c = copy.deepcopy(BASE)
    c["images"]["files"] = {"photo": {"path": name}}
    return c


def truncated(path):
    png(path, (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def huge(path):
    Image.new("1", (9000, 8000)).save(path)  # 72 M pixels, a few kB on disk


def sheet(tmp, text, name="s.tsv"):
    png(tmp / "img/a.png")
    (tmp / name).write_bytes(text)
    return {**copy.deepcopy(BASE), "sheets": [{"path": name}]}


def changed(**kw):
    c = copy.deepcopy(BASE)
    for key, value in kw.items():
        node = c
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return c


CONFIG_CASES = {
    "missing image": (lambda t: with_file(t, "gone.png", lambda p: None),
                      "images.files.photo.path: image file not found: gone.png"),
    "truncated image": (lambda t: with_file(t, "cut.png", truncated),
                        "images.files.photo.path: not an image file: cut.png"),
    "zero-byte image": (lambda t: with_file(t, "zero.png", lambda p: p.write_bytes(b"")),
                        "not an image file: zero.png"),
    "huge image": (lambda t: with_file(t, "huge.png", huge),
                   "image huge.png is 9000x8000, more than images.max_pixels"),
    "unknown family": (lambda t: changed(models={"m": {"family": "gpt9", "path": "x"}}),
                       "config models.m.family: 'gpt9' is not one of"),
    "ROI with x0 > x1": (lambda t: changed(metrics__spatial={"regions": {"r": [0.6, 0, 0.2, 1]}}),
                         "config metrics.spatial.regions.r: need x0 < x1 and y0 < y1"),
    "ROI outside [0, 1]": (lambda t: changed(metrics__spatial={"regions": {"r": [0, 0, 1.5, 1]}}),
                           "config metrics.spatial.regions.r.2: 1.5 is greater than the maximum of 1"),
    "box outside the image": (lambda t: {**with_file(t, "p.png", png), "images": {
        "synthetic": {"scenes": []},
        "files": {"photo": {"path": "p.png", "objects": [{"label": "dog", "box": [0, 0, 50, 10]}]}}}},
        "config images.files.photo.objects[0].box: [0, 0, 50, 10] is not a box inside the 40x30 image"),
    "unknown metric": (lambda t: changed(metrics={"magic": {}}), "config metrics.magic: unknown metric"),
    "empty question": (lambda t: changed(questions={"q": {"text": "   "}}), "config questions.q.text: is empty"),
    "non-UTF-8 question text": (lambda t: sheet(t, b"image\tquestion\nimg/a.png\tCaf\xe9?\n"),
                                "sheet s.tsv line 2: not UTF-8 text (byte 0xe9)"),
    "duplicate image ids": (lambda t: {**with_file(t, "p.png", png), "images": {
        "synthetic": {"scenes": ["square_only"]}, "files": {"square_only": {"path": "p.png"}}}},
        "config images.files.square_only: id is also a synthetic scene"),
    "image id not wildcard-safe": (lambda t: {**with_file(t, "p.png", png), "images": {
        "synthetic": {"scenes": []}, "files": {"my photo": {"path": "p.png"}}}},
        "config images.files: 'my photo' is not a valid id"),
    "sheet row with a missing column": (lambda t: sheet(t, b"image\tquestion\texpected\nimg/a.png\tWhy?\n"),
                                        "sheet s.tsv line 2: 2 fields, the header has 3"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_stage(case, tmp_path):
    make, message = CONFIG_CASES[case]
    cfg = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(VlmattnError) as e:
        load_dataset(load_config(cfg, tmp_path), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and message in msg, msg
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


# ---------------------------------------------------------------------------------- extraction
def ckpt_without_weights(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))


def ckpt_corrupt_config(src, dst):
    shutil.copytree(src, dst)
    (dst / "config.json").write_text("{not json")


def short_context(src, dst):
    spec = toy.ToySpec(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2,
                       text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=1, max_positions=20)
    toy.save(*toy.build_toy(spec), dst)


EXTRACT_CASES = {  # family, checkpoint maker (None: the tiny one as is), image size
    "family/checkpoint mismatch": ("qwen2_vl", None, (40, 30), "model 'm': checkpoint", "use family 'llava'"),
    "checkpoint directory without weights": ("llava", ckpt_without_weights, (40, 30),
                                             "model 'm': cannot load the weights", None),
    "corrupt config.json": ("llava", ckpt_corrupt_config, (40, 30), "model 'm': cannot load a checkpoint", None),
    "prompt longer than the context": ("llava", short_context, (40, 30), "model 'm': prompt of",
                                       "exceeds the context of 20"),
    "1x1 image": ("llava", None, (1, 1), "sample m/bad__q: model 'm': image of 1x1 pixels is smaller than one", None),
}


@pytest.mark.parametrize("case", EXTRACT_CASES)
def test_extract_stage(case, checkpoint, tmp_path):
    family, make, size, message, also = EXTRACT_CASES[case]
    path = checkpoint("llava")
    if make is not None:
        make(path, tmp_path / "ckpt")
        path = tmp_path / "ckpt"
    model = {"id": "m", "family": family, "path": str(path), "dtype": "float32", "device": "cpu"}
    good, bad = png(tmp_path / "good.png"), png(tmp_path / "bad.png", size)
    samples = [{"image_id": i, "question_id": "q", "question": "What shape is in the image?", "image": str(p),
                "annotation": None, "objects": []} for i, p in (("good", good), ("bad", bad))]
    out, index = tmp_path / "out", tmp_path / "index.csv"
    with pytest.raises(SystemExit) as e:
        extraction_jobs.extract_shard(model, samples, SETTINGS, 0, str(out), str(index), str(tmp_path / "cache"))
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith("vlmattn: ") and message in msg and (also is None or also in msg), msg
    assert not index.exists() and (not out.exists() or not any(out.iterdir()))
    assert not list((tmp_path / "cache").glob(".*.tmp"))


# -------------------------------------------------------------------------------------- metric
def cache_file(path):
    write_sample(path, make_sample(tile(np.full(4, 0.25), n_steps=2, n_layers=2, n_heads=2)))


def wrong_version(path):
    cache_file(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99


def truncated_h5(path):
    cache_file(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def nan_rows(path):
    cache_file(path)
    with h5py.File(path, "a") as f:
        d = f["attention/decode"][()]
        d[1, 0, 1, :] = np.nan
        f["attention/decode"][...] = d


METRIC_CASES = {
    "wrong HDF5 schema version": (wrong_version, "unsupported HDF5 schema version 99"),
    "truncated HDF5 file": (truncated_h5, "not a readable attention cache file (truncated or not HDF5"),
    "HDF5 with NaN rows": (nan_rows,
                           "attention/decode holds 12 NaN or infinite values (first at step 1, layer 0, head 1)"),
}


@pytest.mark.parametrize("case", METRIC_CASES)
def test_metric_stage(case, tmp_path):
    make, message = METRIC_CASES[case]
    h5 = tmp_path / "m" / "img__q.h5"
    h5.parent.mkdir()
    make(h5)
    index = tmp_path / "index.csv"
    tables.write_table(__import__("pandas").DataFrame([["m", "img", "q", str(h5), "k", 3, 2, "w"]],
                                                    columns=tables.INDEX_COLUMNS), index)
    out = tmp_path / "table.csv"
    cfg = json.loads(json.dumps(load_config({**BASE, "metrics": {"concentration": {}}})["metrics"]["concentration"]))
    with pytest.raises(SystemExit) as e:
        metric_jobs.metric("concentration", str(index), cfg, str(out))
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith(f"vlmattn: {h5}: ") and message in msg, msg
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_the_sweep_covers_at_least_twenty_cases():
    assert len(CONFIG_CASES) + len(EXTRACT_CASES) + len(METRIC_CASES) >= 20
