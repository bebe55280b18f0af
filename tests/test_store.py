"""HDF5 cache: round trip, schema version check, atomic writes."""

import h5py
import numpy as np
import pytest

from vlmattn.engine.inference import capture_attention, load_model
from vlmattn.errors import SchemaVersionError
from vlmattn.images.synthetic import DEFAULT_SCENES, draw
from vlmattn.store import read_sample, write_sample


@pytest.fixture(scope="module")
def sample(gqa_checkpoint):
    lm = load_model("toy", "llava", str(gqa_checkpoint))
    return capture_attention(lm, draw(DEFAULT_SCENES["two_shapes"], 40), "How many shapes are there?", max_new_tokens=3,
                   meta={"image_id": "two_shapes", "question_id": "count"})


def lm_special(sample) -> set[int]:
    """The special ids of the toy tokenizer: those whose decoded text is one of its special tokens."""
    from vlmattn.models.toy import SPECIAL_TOKENS, build_tokenizer

    tok = build_tokenizer()
    return set(tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)))


def test_files_without_the_special_marks_read_as_none(sample, tmp_path):
    path = tmp_path / "s.h5"
    write_sample(path, sample)
    with h5py.File(path, "a") as f:
        del f["tokens/generated_special"]
    assert read_sample(path).generated_special is None


def test_round_trip_float32(sample, tmp_path):
    path = tmp_path / "s.h5"
    write_sample(path, sample, attention_dtype="float32")
    back = read_sample(path)
    np.testing.assert_array_equal(back.decode, sample.decode)
    np.testing.assert_array_equal(back.prefill, sample.prefill)
    assert back.input_tokens == sample.input_tokens
    assert back.generated_tokens == sample.generated_tokens
    # the capture marks the special generated ids (EOS) and the file keeps the marks
    assert sample.generated_special.tolist() == [i in lm_special(sample) for i in sample.generated_ids.tolist()]
    np.testing.assert_array_equal(back.generated_special, sample.generated_special)
    np.testing.assert_array_equal(back.spans, sample.spans)
    np.testing.assert_array_equal(back.token_boxes, sample.token_boxes)
    assert back.attrs["image_id"] == "two_shapes"
    assert back.attrs["transformers_version"]
    assert len(back.vision_index) == int(np.prod(back.grid[0]))


def test_float16_is_default_and_compressed(sample, tmp_path):
    path = tmp_path / "s.h5"
    write_sample(path, sample)
    with h5py.File(path) as f:
        d = f["attention/decode"]
        assert d.dtype == np.float16 and d.compression == "gzip" and d.chunks[0] == 1
        assert f["attention/prefill"].shape[2] == 1  # default: last prompt row only
    np.testing.assert_allclose(read_sample(path).decode, sample.decode, atol=1e-3)


def test_unknown_schema_version_names_file_and_version(sample, tmp_path):
    path = tmp_path / "future.h5"
    write_sample(path, sample)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 7
    with pytest.raises(SchemaVersionError, match=r"future\.h5.*version 7"):
        read_sample(path)


def test_failed_write_leaves_nothing(sample, tmp_path):
    path = tmp_path / "s.h5"
    with pytest.raises(TypeError):
        write_sample(path, sample, attention_dtype="not-a-dtype")
    assert list(tmp_path.iterdir()) == []


def test_schema_doc_lists_every_setting(sample):
    """docs/hdf5-schema.md names every key of ``settings_json``, and nothing else, on its row."""
    import json
    import re

    from tests import REPO

    row = next(line for line in (REPO / "docs/hdf5-schema.md").read_text().splitlines()
               if line.startswith("| `settings_json`"))
    documented = set(re.findall(r"`(\w+)`", row.split("|")[3]))
    assert documented == set(json.loads(sample.attrs["settings_json"]))


@pytest.mark.parametrize("layout", ["full", "compact"])
def test_version_2_files_read_as_one_piece_an_image(sample, tmp_path, layout):
    """A version-2 file (no pieces, no markers, four decode segments) reads as the same sample."""
    from vlmattn.store import DECODE_SEGMENTS_V2

    path = tmp_path / "v2.h5"
    write_sample(path, sample, layout=layout)
    want = read_sample(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 2
        for name in ("piece_image", "piece_kind", "marker_positions", "marker_kind"):
            del f[f"vision/{name}"]
        if layout == "compact":
            seg = f["attention/decode_segments"][()][..., :4]
            del f["attention/decode_segments"]
            f["attention"].create_dataset("decode_segments", data=seg)
            f["attention/decode_segments"].attrs["segments"] = list(DECODE_SEGMENTS_V2)
    got = read_sample(path)
    assert got.piece_image.tolist() == [0] and got.piece_kinds == ["image"] and len(got.marker_positions) == 0
    np.testing.assert_array_equal(got.decode_segments, want.decode_segments)
    np.testing.assert_array_equal(got.decode_vision, want.decode_vision)
