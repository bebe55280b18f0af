"""The pruning jobs of the workflow on tiny llava checkpoints: offline scores from a cache that stores
only the scoring layers, the online chunks, the ablation tables and their figures."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests import REPO
from tests.conftest import build_checkpoint
from vlmattn.engine.inference import capture_attention, load_model
from vlmattn.pruning import evalset, offline
from vlmattn.pruning import jobs as pj
from vlmattn.pruning.options import offline_options, online_options, statistics_options
from vlmattn.pruning.scorers import HEAD_STRATEGIES
from vlmattn.store import write_sample
from vlmattn.tables import INDEX_COLUMNS
from vlmattn.workflow import load_config

BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def options(pruning: dict, job=online_options) -> dict:
    """The options of pruning job ``job`` (a function of :mod:`vlmattn.pruning.options`) for the
    default config with this pruning block."""
    c = copy.deepcopy(BASE)
    c["contrasts"] = {}
    c["pruning"] = pruning
    c["extraction"]["prefill_layers"] = "all"
    return job(load_config(c))


def test_offline_shard_reads_only_the_scoring_layers(tmp_path):
    """A cache with the prefill rows of layers 1 and 2 of a 3-layer model gives, for pruning at K = 2,
    the table the full capture gives."""
    lm = load_model("tiny3", "llava", str(build_checkpoint(tmp_path / "m", text_layers=3)))
    o = options({"prune_layer": 2, "random": {"draws": 2}}, offline_options)
    rows, expected = [], []
    for it in evalset.evaluation_set(3, size=64):
        kw = dict(max_new_tokens=2, prefill_rows="all_text", vision_rollout=False)
        full = capture_attention(lm, it.image, it.question, **kw)
        part = capture_attention(lm, it.image, it.question, prefill_layers=[1, 2], **kw)
        assert part.prefill.shape[0] == 2 and full.prefill.shape[0] == 3
        boxes = np.asarray(it.boxes, np.float32)
        full, part = (dataclasses.replace(s, boxes=boxes) for s in (full, part))
        path = tmp_path / f"q{it.index}.h5"
        write_sample(path, part, attention_dtype="float32")
        rows.append(["tiny3", f"img{it.index}", it.qtype, str(path), "", "0", "2", ""])
        table = offline.offline_table(full, offline.sample_scores(full, prune_layer=2, **o["scores"]),
                                      offline.model_budgets(len(full.vision_index), **o["budgets"],
                                                            n_layers=full.n_layers, prune_layer=2),
                                      prune_layer=2, step=0, pooling=True)
        expected.append(table.assign(model="tiny3", image=f"img{it.index}", question=it.qtype))
    index = tmp_path / "index.csv"
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(index, index=False)
    pj.offline_shard(str(index), o, str(tmp_path / "offline.csv"))
    got = pd.read_csv(tmp_path / "offline.csv")
    want = pd.concat(expected, ignore_index=True)[got.columns]
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-7, atol=0, check_dtype=False)
    assert {"fastv", "pyramiddrop", "head:variance", "query:system_and_text", "pooling",
            "random:1"} <= set(got["scorer"])

    pj.offline_tables([str(tmp_path / "offline.csv")], 0.95, str(tmp_path / "summary.csv"))
    summary = pd.read_csv(tmp_path / "summary.csv")
    fastv = want[want["scorer"] == "fastv"].groupby("budget")["recall"].mean()
    s = summary[summary["scorer"] == "fastv"].set_index("budget")["recall"]
    assert s.to_dict() == pytest.approx(fastv.to_dict(), rel=1e-7)
    assert "random" in set(summary["scorer"]) and not summary["scorer"].str.startswith("random:").any()

    with pytest.raises(SystemExit, match="add them to extraction.prefill_layers"):
        pj.offline_shard(str(index), options({"prune_layer": 1}, offline_options), str(tmp_path / "bad.csv"))
    assert not (tmp_path / "bad.csv").exists()


def test_online_chunks_tables_and_figures(checkpoint, tmp_path):
    model = {"id": "tiny", "family": "llava", "path": str(checkpoint("llava"))}
    o = options({"prune_layer": 1, "random": {"draws": 2},
                 "online": {"n_items": 6, "chunks": 2, "max_new_tokens": 2, "modes": ["drop", "mask"]}})
    chunks = [str(tmp_path / f"{c}.csv") for c in range(2)]
    for c, path in enumerate(chunks):
        pj.online_chunk(model, o, c, path)
    rows = pd.concat([pd.read_csv(p) for p in chunks], ignore_index=True)
    assert sorted(rows["item"].unique()) == list(range(6))
    assert (rows["model"] == "tiny").all() and set(rows["mode"]) == {"none", "drop", "mask"}
    assert sorted(rows["budget"].unique()) == [2, 4, 5, 16]  # 64 / 128 / 192 of 576 scaled to 16 tokens, and all
    outs = [str(tmp_path / f"{t}.csv") for t in pj.ONLINE_TABLES]
    statistics = options({}, statistics_options)
    pj.online_tables(chunks, statistics, "kept", outs)
    first = [Path(p).read_bytes() for p in outs]
    pj.online_tables(chunks, statistics, "kept", outs)
    assert [Path(p).read_bytes() for p in outs] == first
    a = pd.read_csv(outs[0])
    assert (a["n_items"] == 6).all() and set(a["mode"]) == {"drop", "mask"}
    assert len(a) == (len(HEAD_STRATEGIES) + 2 + 1) * 3 * 2  # head strategies and baselines × budgets × modes
    assert (a["budget_convention"] == "kept").all()
    ranks = pd.read_csv(outs[3])
    assert (ranks["budget_convention"] == "kept").all()
    assert len(ranks) == 3 * 2 * 3 * 2  # studies × modes × budgets × (accuracy, recall)
    speed = pd.read_csv(outs[4])
    assert speed["mode"].iloc[0] == "none" and (speed.loc[speed["mode"] == "mask", "flops_fraction"] == 1).all()

    rerun = str(tmp_path / "again.csv")
    pj.online_chunk(model, o, 0, rerun)
    timing = ["prefill_s", "decode_s", "peak_memory_bytes"]
    pd.testing.assert_frame_equal(pd.read_csv(rerun).drop(columns=timing), pd.read_csv(chunks[0]).drop(columns=timing))

    figures = [str(tmp_path / f"{s}_{m}.png") for s in pj.ONLINE_TABLES[:3] for m in ("drop", "mask")]
    pj.plot_ablation(outs[:3], "tiny", ["drop", "mask"], figures)
    assert all((tmp_path / f).stat().st_size > 10_000 for f in figures)

    with pytest.raises(SystemExit, match=r"config pruning.prune_layer: 2 needs 1 <= K < 2, the decoder layers of "
                                         r"model 'tiny'"):
        pj.online_chunk(model, options({"prune_layer": 2, "online": {"n_items": 2}}), 0, str(tmp_path / "x.csv"))


def test_layer_averaged_budgets_in_the_jobs():
    from vlmattn.errors import InputError

    o = options({"prune_layer": 2, "budget_convention": "layer_averaged"})
    assert pj.model_budgets(576, o, 32, "llava_7b").tolist() == [166, 98, 30]
    assert options({"prune_layer": 2})["budgets"]["convention"] == "kept"
    assert pj.model_budgets(576, options({"prune_layer": 2}), 32, "llava_7b").tolist() == [192, 128, 64]
    # the toy model: 2 layers, K = 1 → R = 2T − V; 7 of 64 tokens cannot be a layer average
    with pytest.raises(InputError,
                       match=r"pruning.budget_convention: layer_averaged on model 'toy'.*needs at least 33"):
        pj.model_budgets(64, options({"prune_layer": 1, "budget_convention": "layer_averaged"}), 2, "toy")
