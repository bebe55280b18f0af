"""The workflow on replicas of tiled families: every metric, the contrasts, offline pruning and
attribution in one run of LLaVA-NeXT (base and high-resolution grids, newline markers, attribution)
and Gemma 3 (an image and its crops, bidirectional prefill, no pruning harness). Every family's
replica samples go through every metric and the offline pruning in tests/test_tiled_families.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.pipeline import TINY_CONFIG, snakemake, write_config
from vlmattn.families import ONLINE_PRUNING
from vlmattn.metrics import METRICS

pytestmark = pytest.mark.pipeline
FAMILIES = ("llava_next", "gemma3")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiled")
    models = {f: {"family": f, "build": {"kind": "random", "spec": {"seed": 0}}} for f in FAMILIES}
    cfg = {**TINY_CONFIG, "models": models, "shards": 1}
    cfg["extraction"] = {"max_new_tokens": 3, "prefill_rows": "all_text", "prefill_layers": [0, 1],
                         "resources": {"threads": 1}}
    cfg["contrasts"] = {"tl": {"question": "top_left", "a": "triangle", "b": "square",
                               "pairs": [["triangle_topleft", "square_only"]], "roi": "top_left",
                               "statistics": {"n_resamples": 99}, "causal": {"ks": [1], "n_random": 4}}}
    cfg["pruning"] = {"prune_layer": 1, "n_heads": 2, "online": {"models": []}, "learned": {"enabled": False}}
    # the faithfulness curves run through the pruning harness (Gemma 3: not in it)
    cfg["attribution"] = {"models": [f for f in FAMILIES if f in ONLINE_PRUNING], "questions": ["top_left"]}
    write_config(work, cfg)
    snakemake(work, "--cores", "2")
    return work


def test_every_metric_has_rows_for_every_family(run):
    for name in METRICS:
        table = pd.read_parquet(run / "results/tables" / name)
        assert set(table["model"]) == set(FAMILIES), name
        assert len(table) > 0


def test_piece_columns_and_row_shares(run):
    hot = pd.read_parquet(run / "results/tables/hotspots")
    sinks = pd.read_parquet(run / "results/tables/sinks")
    # the sinks table has a row per vision token: LLaVA-NeXT's square images are a base and a
    # high-resolution grid; Gemma 3 pans and scans only images wider or taller than square (one piece)
    pieces = {"llava_next": 2, "gemma3": 1}
    for family in FAMILIES:
        h, s = hot[hot["model"] == family], sinks[sinks["model"] == family]
        n_pieces = s.groupby("image")["piece"].nunique()
        assert (n_pieces == pieces[family]).all(), (family, n_pieces)
        assert set(h["piece"].dropna()) <= set(range(pieces[family]))
    profile = pd.read_parquet(run / "results/tables/layer_profile")
    shares = [c for c in profile.columns if c.endswith("_share")]
    mean_rows = profile[profile["head"] == "mean"]
    np.testing.assert_allclose(mean_rows[shares].fillna(0).sum(axis=1), 1.0, atol=1e-3)  # float16 rows
    # LLaVA-NeXT's newline tokens are seen wherever the image is; Gemma 3's replica has a sliding-window
    # layer whose window misses the image and its wrappers, and a global one that sees both
    nxt, gem = profile[profile["model"] == "llava_next"], profile[profile["model"] == "gemma3"]
    assert (nxt["marker_share"] > 0).all()
    assert ((gem["vision_share"] > 0) == (gem["marker_share"] > 0)).all() and (gem["marker_share"] > 0).any()


def test_contrasts_pruning_and_attribution_tables(run):
    for name in ("heads", "divergence", "encoder", "quadrants", "rollout", "causal"):
        table = pd.read_csv(run / f"results/contrasts/tl/{FAMILIES[0]}/{name}.csv")
        assert len(table) > 0, name
    offline = pd.read_csv(run / "results/tables/pruning_offline.csv")
    assert set(offline["model"]) == set(FAMILIES)
    maps = pd.read_csv(run / "results/tables/attribution_maps.csv")
    assert set(maps["model"]) == {f for f in FAMILIES if f in ONLINE_PRUNING}
