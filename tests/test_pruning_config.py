"""The ``pruning`` config block: schema defaults, the options the jobs get, and the cross-checks
against the models and the extraction."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests import REPO
from vlmattn.errors import ConfigError
from vlmattn.families import ONLINE_PRUNING
from vlmattn.pruning.options import offline_options, online_options, statistics_options
from vlmattn.pruning.scorers import HEAD_STRATEGIES, QUERY_STRATEGIES
from vlmattn.workflow import load_config

BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def config(pruning: dict | None, **extraction) -> dict:
    c = copy.deepcopy(BASE)
    c["contrasts"] = {}
    if pruning is None:
        c.pop("pruning", None)
    else:
        c["pruning"] = pruning
    c["extraction"].update(extraction)
    return c


def test_schema_defaults_and_job_options():
    cfg = load_config(config({}, prefill_layers="all"))
    pc = cfg["pruning"]
    assert pc["prune_layer"] == 2 and pc["budgets"] == [192, 128, 64] and pc["keep_ratios"] == []
    assert tuple(pc["head_strategies"]) == HEAD_STRATEGIES and tuple(pc["query_strategies"]) == QUERY_STRATEGIES
    assert (pc["fixed_query"], pc["fixed_head"]) == ("last_token", "variance")
    assert pc["online"]["models"] == [] and pc["online"]["n_items"] == 256 and pc["online"]["modes"] == ["drop"]
    cfg = load_config(config({"prune_layer": 1, "random": {"draws": 5, "seed": 7}}))
    o = offline_options(cfg)
    assert o["prune_layer"] == 1 and o["scores"] == {"head_strategies": list(HEAD_STRATEGIES),
                           "query_strategies": list(QUERY_STRATEGIES), "fixed_query": "last_token",
                           "fixed_head": "variance", "n_heads": 4, "top_k": 10, "seed": 7, "n_draws": 5,
                           "encoder_layer": -2}
    assert o["budgets"] == {"budgets": [192, 128, 64], "keep_ratios": [], "convention": "kept"}
    assert statistics_options(cfg) == {"confidence": 0.95, "alpha": 0.05, "fractional": False}
    assert pc["online"]["eval_set"] == {"kind": "shapes", "sheet": None, "annotations": None, "images": None,
                                        "scoring": "exact", "pope": {"strategy": "random", "per_image": 3,
                                                                     "n_images": None}}
    vqa = config({"online": {"eval_set": {"kind": "sheet", "sheet": "s.tsv", "scoring": "vqav2"}}},
                 prefill_layers="all")
    assert statistics_options(load_config(vqa))["fractional"] is True
    assert online_options(cfg)["online"]["positions"] == "keep" and o["step"] == 0
    assert online_options(cfg)["scores"] == o["scores"] and online_options(cfg)["budgets"] == o["budgets"]


def test_eval_set_needs_its_files():
    with pytest.raises(ConfigError, match="eval_set.sheet: an eval_set of kind sheet needs it"):
        load_config(config({"online": {"eval_set": {"kind": "sheet"}}}, prefill_layers="all"))
    with pytest.raises(ConfigError, match="eval_set.annotations: an eval_set of kind pope needs it"):
        load_config(config({"online": {"eval_set": {"kind": "pope", "images": "img"}}}, prefill_layers="all"))
    with pytest.raises(ConfigError, match="the shapes set is scored by exact, not pope"):
        load_config(config({"online": {"eval_set": {"scoring": "pope"}}}, prefill_layers="all"))


def test_no_block_no_pruning():
    cfg = load_config(config(None))
    assert "pruning" not in cfg
    with pytest.raises(ConfigError, match="no pruning block"):
        offline_options(cfg)


@pytest.mark.parametrize("pruning,extraction,message", [
    ({"online": {"models": ["nope"]}}, {}, r"pruning.online.models: unknown model 'nope'"),
    ({"prune_layer": 1, "query_strategies": ["system_and_text"]}, {"prefill_rows": "text_after_image"},
     r"query strategy 'system_and_text' .* set extraction.prefill_rows: all_text"),
    ({"prune_layer": 1, "query_strategies": ["last_token"], "fixed_query": "last_5_tokens"}, {"prefill_rows": "last"},
     r"'last_5_tokens' .* set extraction.prefill_rows: text_after_image"),
    ({"prune_layer": 2}, {"prefill_layers": [0, 1]}, r"pruning.prune_layer: 2 scores from decoder layers 1 and 2"),
    ({"prune_layer": 1, "offline": {"step": 6}}, {}, r"pruning.offline.step: 6 is not below extraction.max_new_tokens"),
    ({"budgets": [600]}, {}, r"pruning.budgets.0: 600 is greater than the maximum of 576"),
    ({"online": {"modes": ["cut"]}}, {}, r"pruning.online.modes.0"),
])
def test_bad_blocks_fail_with_one_line(pruning, extraction, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(config(pruning, **extraction))
    assert "\n" not in str(err.value)


def test_offline_off_needs_no_rows_and_online_needs_llava():
    cfg = config({"prune_layer": 5, "offline": {"enabled": False}}, prefill_rows="last", prefill_layers=[0])
    assert load_config(cfg)["pruning"]["offline"]["enabled"] is False
    qwen = config({"prune_layer": 1, "online": {"models": ["toy_qwen"]}})
    qwen["models"]["toy_qwen"] = {"family": "qwen2_vl", "build": {"kind": "random", "spec": {"seed": 0}}}
    with pytest.raises(ConfigError,
                       match="model 'toy_qwen' is qwen2_vl; online pruning runs the families "
                             + ", ".join(ONLINE_PRUNING) + "$"):
        load_config(qwen)
