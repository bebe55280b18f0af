"""Config validation: defaults, sample expansion and one-line errors naming the bad key or file."""

import copy

import pytest
import yaml

from tests import REPO
from vlmattn.config import samples
from vlmattn.engine.inference import load_model
from vlmattn.errors import ConfigError, InputError, ModelError
from vlmattn.workflow import load_config

BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def cfg(**changes):
    c = copy.deepcopy(BASE)
    c.update(changes)
    return c


def test_defaults_are_filled():
    c = load_config({"questions": {"q": {"text": "Hi?"}}, "models": {"m": {"family": "llava", "path": "x"}},
                     "metrics": {"concentration": {}}})
    assert c["extraction"]["max_new_tokens"] == 6
    assert c["extraction"]["resources"]["gpu"] == 0
    assert c["metrics"]["concentration"]["span_threshold"] == 0.9
    assert c["models"]["m"]["dtype"] == "float32"
    assert len(c["images"]["synthetic"]["scenes"]) == 6


def test_samples_product_and_explicit():
    c = load_config({"questions": {"a": {"text": "A?"}, "b": {"text": "B?", "images": ["square_only"]}},
                     "models": {"m": {"family": "llava", "path": "x"}}})
    s = samples(c)
    assert len(s) == 6 + 1
    c2 = load_config({**c, "samples": [{"model": "m", "image": "square_only", "question": "a"}]})
    assert [x.name for x in samples(c2)] == ["square_only__a"]


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"models": {"m": {"family": "gpt9", "path": "x"}}}, r"models\.m\.family: 'gpt9' is not one of"),
        ({"metrics": {"attention_magic": {}}}, r"metrics\.attention_magic: unknown metric"),
        ({"extraction": {"max_new_tokens": 0}}, r"extraction\.max_new_tokens"),
        ({"questions": {"bad__id": {"text": "x"}}}, r"questions"),
        ({"samples": [{"model": "nope", "image": "square_only", "question": "shape"}]},
         r"samples\[0\]\.model: unknown model 'nope'"),
        ({"images": {"synthetic": {"scenes": ["moon"]}}}, r"images\.synthetic\.scenes: unknown scene 'moon'"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(change, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        load_config(cfg(**change))
    assert "\n" not in str(e.value)


def test_missing_image_file(tmp_path):
    c = cfg(images={"files": {"photo": {"path": "nowhere.png"}}})
    with pytest.raises(InputError, match=r"images\.files\.photo\.path: image file not found: .*nowhere\.png"):
        load_config(c, base_dir=tmp_path)


def test_file_that_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("not pixels")
    c = cfg(images={"files": {"notes": {"path": "notes.png"}}})
    with pytest.raises(InputError, match=r"not an image file: .*notes\.png"):
        load_config(c, base_dir=tmp_path)


def test_unknown_family_and_mismatch(gqa_checkpoint):
    with pytest.raises(ModelError, match="unknown model family 'gpt9'"):
        load_model("m", "gpt9", str(gqa_checkpoint))
    with pytest.raises(ModelError, match=r"model 'm': cannot load a checkpoint from '.*missing'"):
        load_model("m", "llava", str(gqa_checkpoint.parent / "missing"))


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_examples_validate(path, tmp_path):
    base = REPO
    if path.name == "easy_vqa.yaml":  # its sheets are written by the converter first (README, easy-VQA)
        pytest.importorskip("easy_vqa")
        from vlmattn import easy_vqa

        easy_vqa.main([str(tmp_path / "data/easy_vqa"), "--train", "20", "--test", "10", "--samples", "2"])
        base = tmp_path
    cfg = load_config(yaml.safe_load(path.read_text()), base_dir=str(base))
    assert cfg["metrics"], path
