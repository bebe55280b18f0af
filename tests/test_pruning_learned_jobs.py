"""The learned-pruner jobs of the workflow on the tiny llava checkpoint (training per variant, online
chunks, the comparison table and figures), the comparison's statistics on planted rows, and the config
block."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests import REPO
from vlmattn.errors import ConfigError
from vlmattn.pruning import jobs as pj
from vlmattn.pruning import stats
from vlmattn.pruning.learned import load_pruner
from vlmattn.pruning.options import learned_options, online_options, statistics_options, train_options
from vlmattn.workflow import load_config

BASE = yaml.safe_load((REPO / "config.yaml").read_text())
VARIANTS = [{"name": "plain"}, {"name": "learnable", "use_attn_residual": True, "learnable_attn_weight": True}]


def config(pruning: dict) -> dict:
    c = copy.deepcopy(BASE)
    c["contrasts"] = {}
    c["pruning"] = pruning
    return c


def test_config_block():
    cfg = load_config(config({"prune_layer": 1, "online": {"models": ["toy_llava"]},
                              "learned": {"enabled": True, "variants": VARIANTS}}))
    o = train_options(cfg, "learnable")
    assert o["prune_layer"] == 1 and set(o) == {"prune_layer", "spec", "train"}
    assert o["spec"] == {"dim": 64, "n_heads": 4, "residual_scale": "standardize", "use_attn_residual": True,
                         "attn_residual_weight": 0.5, "learnable_attn_weight": True}
    assert train_options(cfg, "plain")["spec"]["use_attn_residual"] is False
    assert o["train"]["steps"] == 300 and o["train"]["keep_ratio"] == pytest.approx(128 / 576)
    with pytest.raises(ConfigError, match="config pruning.learned.variants: no variant 'other'"):
        train_options(cfg, "other")
    with pytest.raises(ConfigError, match=r"pruning.learned.variants: the names \['plain'\] are used twice"):
        load_config(config({"online": {"models": ["toy_llava"]},
                            "learned": {"enabled": True, "variants": [{"name": "plain"}, {"name": "plain"}]}}))
    with pytest.raises(ConfigError, match="pruning.online.models, which is empty"):
        load_config(config({"learned": {"enabled": True}}))
    with pytest.raises(ConfigError, match="not a multiple of n_heads"):
        load_config(config({"online": {"models": ["toy_llava"]}, "learned": {"enabled": True, "dim": 10}}))


def rows_of(study, scorer, correct, answers=None, budget=2):
    n = len(correct)
    return pd.DataFrame({"item": range(n), "mode": "none" if study == "unpruned" else "drop", "study": study,
                         "scorer": scorer, "budget": budget, "kept": 0.5, "average_tokens": 3.0,
                         "correct": correct,
                         "answer": answers if answers is not None else np.where(correct, "yes", "no"),
                         "recall": 0.5, "flops_fraction": 0.7})


def test_comparison_statistics_on_planted_rows():
    truth = np.ones(40, bool)
    ablation = pd.concat([rows_of("unpruned", "unpruned", truth), rows_of("published", "fastv", truth),
                          rows_of("study_a", "head:sum", np.arange(40) % 4 != 0),
                          rows_of("study_b", "query:last_token", np.arange(40) % 10 != 0),
                          rows_of("published", "sparsevlm", truth), rows_of("baseline", "pooling", truth),
                          rows_of("baseline", "random:0", truth)], ignore_index=True)
    assert stats.best_strategy(ablation) == "query:last_token"
    learned = pd.concat([rows_of("unpruned", "unpruned", truth),
                         rows_of("learned", "learned:plain", np.arange(40) >= 20)], ignore_index=True)
    t = stats.learned_table(ablation, learned)
    assert set(t["scorer"]) == {"fastv", "query:last_token", "pooling", "random:0", "learned:plain"}
    row = t.set_index("scorer").loc["learned:plain"]
    assert row["n_lost"] == 20 and row["accuracy"] == 0.5 and row["significant"]
    assert row["p"] == pytest.approx(2 * 0.5**20)
    bad = learned.copy()
    bad.loc[(bad["study"] == "unpruned") & (bad["item"] == 3), "answer"] = "no"
    with pytest.raises(ValueError, match=r"differ from the ablation's on items \[3\]"):
        stats.learned_table(ablation, bad)


def test_train_run_compare_and_plot(checkpoint, tmp_path):
    model = {"id": "tiny", "family": "llava", "path": str(checkpoint("llava"))}
    cfg = config({"prune_layer": 1, "random": {"draws": 2},
                  "online": {"models": ["toy_llava"], "n_items": 4, "chunks": 2, "max_new_tokens": 2},
                  "learned": {"enabled": True, "dim": 16, "n_heads": 2, "variants": VARIANTS,
                              "train": {"steps": 3, "batch_size": 4, "log_every": 2, "render_size": 64}}})
    cfg = load_config(cfg)
    o = online_options(cfg)
    weights, reports = [], []
    for v in ("plain", "learnable"):
        weights.append(str(tmp_path / "pruners" / "tiny" / f"{v}.safetensors"))
        reports.append(str(tmp_path / "pruners" / "tiny" / f"{v}.csv"))
        pj.train_pruner(model, train_options(cfg, v), v, weights[-1], reports[-1])
    _, meta = load_pruner(weights[1])
    assert meta["variant"] == "learnable" and meta["model"] == "tiny" and meta["attn_weight"] != 0.5
    report = pd.read_csv(reports[0])
    assert list(report["step"]) == [2, 3] and (report["variant"] == "plain").all()

    online, learned = [], []
    for c in range(2):
        online.append(str(tmp_path / f"online{c}.csv"))
        learned.append(str(tmp_path / f"learned{c}.csv"))
        pj.online_chunk(model, o, c, online[-1])
        pj.learned_chunk(model, learned_options(cfg), c, weights, learned[-1])
    rows = pd.concat([pd.read_csv(p) for p in learned], ignore_index=True)
    assert sorted(rows["item"].unique()) == [0, 1, 2, 3]
    assert set(rows["scorer"]) == {"unpruned", "learned:plain", "learned:learnable"}
    assert sorted(rows.loc[rows["study"] == "learned", "budget"].unique()) == [2, 4, 5]

    outs = [str(tmp_path / "comparison.csv"), str(tmp_path / "training.csv")]
    pj.learned_tables(online, learned, reports, statistics_options(cfg), *outs)
    first = [Path(p).read_bytes() for p in outs]
    pj.learned_tables(online, learned, reports, statistics_options(cfg), *outs)
    assert [Path(p).read_bytes() for p in outs] == first
    t = pd.read_csv(outs[0])
    assert {"learned:plain", "learned:learnable", "fastv", "pooling", "random:0", "random:1"} <= set(t["scorer"])
    assert {"learned", "published", "baseline"} <= set(t["study"]) <= {"learned", "published", "baseline",
                                                                        "study_a", "study_b"}
    assert (t["n_items"] == 4).all() and len(t[t["study"].isin(["study_a", "study_b"])]["scorer"].unique()) == 1
    assert set(pd.read_csv(outs[1])["model"]) == {"tiny"}

    pngs = [str(tmp_path / "learned.png"), str(tmp_path / "training.png")]
    pj.plot_learned(outs[0], outs[1], "tiny", *pngs)
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)

    assert not (tmp_path / "x.safetensors").exists()
