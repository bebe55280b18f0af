"""The compact decode layout (schema v2): every reader gets the same values as from the full layout.

Samples captured from tiny LLaVA and Qwen2.5-VL models (vision encoder and language-model rollout on,
ground-truth boxes set) are written in both layouts. Every metric of the catalogue, with the default
run's config blocks, must give byte-identical CSV tables from the two files; so must the rollout maps
and the pruning scores that read decode rows. A version-1 file (full rows, no layout attribute) must
still read, and a damaged compact file must be refused with one line naming it. (Bytes per sample
are measured by ``bench/extraction.py``.)
"""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests import REPO
from vlmattn import rollout
from vlmattn.engine.inference import capture_attention
from vlmattn.errors import InputError
from vlmattn.metrics import METRICS, compute_table
from vlmattn.metrics.options import metric_params
from vlmattn.pruning import offline
from vlmattn.pruning.options import offline_options
from vlmattn.store import DECODE_SEGMENTS, read_sample, write_sample
from vlmattn.workflow import load_config

SETTINGS = dict(max_new_tokens=4, prefill_rows="all_text", prefill_layers=[0, 1], vision_encoder=True,
                llm_rollout=True)


def scene(size):
    im = Image.new("RGB", size, (20, 20, 20))
    ImageDraw.Draw(im).rectangle([4, 4, size[0] // 2, size[1] // 2], fill=(250, 40, 40))
    return im, np.array([[4, 4, size[0] // 2, size[1] // 2]], np.float32)


@pytest.fixture(scope="module")
def pairs(loaded, tmp_path_factory):
    """``[(full, compact)]`` samples read back from the two layouts, for two families."""
    out = tmp_path_factory.mktemp("layouts")
    got = []
    for family, size in (("llava", (48, 40)), ("qwen2_5_vl", (150, 90))):
        im, boxes = scene(size)
        s = capture_attention(loaded(family), im, "What shape is in the image?", **SETTINGS,
                              meta={"image_id": "img", "question_id": "q"})
        s.boxes, s.labels, s.colours = boxes, ["square"], ["red"]
        files = {}
        for layout in ("full", "compact"):
            files[layout] = out / f"{family}_{layout}.h5"
            write_sample(files[layout], s, layout=layout)
        got.append((family, files, read_sample(files["full"]), read_sample(files["compact"])))
    return got


def csv(df) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


def test_the_two_layouts_hold_the_same_decode_values(pairs):
    for _family, files, full, compact in pairs:
        assert full.layout == "full" and compact.layout == "compact" and compact.decode is None
        np.testing.assert_array_equal(compact.decode_vision, full.decode_vision)
        np.testing.assert_array_equal(compact.decode_segments, full.decode_segments)
        assert compact.decode_segments.shape == (*full.decode.shape[:3], len(DECODE_SEGMENTS))
        # vision columns and segment sums partition every row
        total = compact.decode_vision.astype(np.float64).sum(-1) + compact.decode_segments.sum(-1)
        np.testing.assert_allclose(total, full.decode.astype(np.float64).sum(-1), rtol=0, atol=1e-12)
        np.testing.assert_allclose(total, 1.0, atol=2e-3)  # float16 rows
        assert (compact.n_steps, compact.n_layers, compact.n_heads) == full.decode.shape[:3]
        with h5py.File(files["compact"], "r") as f:
            assert "decode" not in f["attention"] and f["attention/decode_vision"].dtype == np.float16


@pytest.mark.parametrize("name", METRICS)
def test_every_metric_gives_the_same_table_from_both_layouts(pairs, name):
    cfg = load_config(REPO / "config.yaml", REPO)
    params = metric_params(name, cfg["metrics"])
    ids = {"model": "m", "image": "img", "question": "q"}
    for family, _, full, compact in pairs:
        a, b = compute_table(name, full, params, ids), compute_table(name, compact, params, ids)
        assert len(a) > 0
        assert csv(a) == csv(b), f"{name} on {family}"


def test_rollout_maps_and_pruning_scores_are_the_same_from_both_layouts(pairs):
    for _, _, full, compact in pairs:
        for source in ("received", "cls"):
            np.testing.assert_array_equal(rollout.seed_rollout_map(compact, 0, source),
                                          rollout.seed_rollout_map(full, 0, source))
        np.testing.assert_array_equal(offline.reference_attention(compact, prune_layer=1, step=0),
                                      offline.reference_attention(full, prune_layer=1, step=0))
        o = offline_options(load_config(REPO / "config.yaml", REPO))
        kw = {"prune_layer": o["prune_layer"], **o["scores"]}
        a, b = offline.sample_scores(full, **kw), offline.sample_scores(compact, **kw)
        assert a.keys() == b.keys() and len(a) > 10
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_version_1_file_reads_as_the_full_layout(pairs, tmp_path):
    _, files, full, _ = pairs[0]
    old = tmp_path / "v1.h5"
    old.write_bytes(files["full"].read_bytes())
    with h5py.File(old, "r+") as f:
        f.attrs["schema_version"] = 1
        del f["attention"].attrs["layout"]
    s = read_sample(old)
    assert s.layout == "full"
    np.testing.assert_array_equal(s.decode, full.decode)


def test_a_compact_sample_writes_back_compact(pairs, tmp_path):
    _, _, _, compact = pairs[0]
    path = tmp_path / "again.h5"
    write_sample(path, compact, layout="full")
    again = read_sample(path)
    assert again.layout == "compact"
    np.testing.assert_array_equal(again.decode_vision, compact.decode_vision)
    np.testing.assert_array_equal(again.decode_segments, compact.decode_segments)


def test_damaged_compact_files_are_refused_naming_the_file(pairs, tmp_path):
    _, files, _, _ = pairs[0]
    bad = tmp_path / "nan.h5"
    bad.write_bytes(files["compact"].read_bytes())
    with h5py.File(bad, "r+") as f:
        seg = f["attention/decode_segments"][()]
        seg[1, 0, 1, 2] = np.nan
        f["attention/decode_segments"][...] = seg
    with pytest.raises(InputError, match=r"nan\.h5: attention/decode_segments holds 1 NaN .*step 1, layer 0, head 1"):
        read_sample(bad)
    renamed = tmp_path / "renamed.h5"
    renamed.write_bytes(files["compact"].read_bytes())
    with h5py.File(renamed, "r+") as f:
        f["attention/decode_segments"].attrs["segments"] = ["cls", "text", "after", "generated"]
    with pytest.raises(InputError, match=r"renamed\.h5: attention/decode_segments holds segments"):
        read_sample(renamed)
    with pytest.raises(ValueError, match="unknown decode layout 'sparse'"):
        write_sample(tmp_path / "x.h5", pairs[0][2], layout="sparse")
