"""The default configuration, exactly as shipped, runs end to end (once per test session)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests import REPO
from tests.pipeline import snakemake
from vlmattn.config import samples
from vlmattn.workflow import load_config

pytestmark = pytest.mark.pipeline


def test_every_metric_dataset_and_summary_reads_with_pandas_with_the_documented_columns(default_run):
    """Each metric's Parquet dataset has the ids then its module's columns; its summary has model,
    question, the module's keys, then quantity and the statistics, one quantity per numeric column."""
    from vlmattn.metrics import METRICS, get_metric
    from vlmattn.summaries import STAT_COLUMNS, read_summary

    for name in METRICS:
        module = get_metric(name)
        table = pd.read_parquet(default_run / "results/tables" / name)
        assert list(table.columns[:3]) == ["model", "image", "question"], name
        assert set(module.COLUMNS) <= set(table.columns), name
        assert {str(m) for m in table["model"].unique()} == {"toy_llava", "toy_llava_untrained"}, name
        summary = read_summary(default_run / "results/summaries" / f"{name}.csv")
        assert list(summary.columns) == ["model", "question", *module.SUMMARY_KEYS, *STAT_COLUMNS], name
        skip = {"model", "image", "question", *module.SUMMARY_KEYS, *getattr(module, "SUMMARY_SKIP", ())}
        numeric = [c for c in table.columns if c not in skip and (pd.api.types.is_numeric_dtype(table[c])
                                                                   or pd.api.types.is_bool_dtype(table[c]))]
        assert list(dict.fromkeys(summary["quantity"])) == numeric, name
        assert (summary["n"] <= table.groupby(["model", "question"], observed=True).size().max()).all(), name
    assert (default_run / "results/summaries/head_clusters_coassignment.parquet").exists()


def test_concentration_table_covers_every_sample_layer_head_and_pooling(default_run):
    cfg = load_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    table = pd.read_parquet(default_run / "results/tables/concentration")
    pools = cfg["metrics"]["concentration"]
    sink_variants = 2 if pools["exclude_sinks"] == "both" else 1
    expected = 0
    for s in samples(cfg):
        text = json.loads((default_run / f"results/models/{s.model}/config.json").read_text())["text_config"]
        heads = text["num_attention_heads"] + len(pools["head_pooling"])
        expected += len(pools["step_pooling"]) * text["num_hidden_layers"] * heads * sink_variants
    assert len(table) == expected
    got = set(map(tuple, table[["model", "image", "question"]].drop_duplicates().values))
    assert got == {(s.model, s.image, s.question) for s in samples(cfg)}
    assert (default_run / "results/plots/concentration_by_layer.png").exists()


def test_trained_model_reaches_target_on_every_question_type(default_run):
    """Held-out accuracy by greedy generation after reload, recorded at the end of training: the
    recipe's target is 95 % on every question type and every corner."""
    from vlmattn.models import shapes_task as task

    acc = json.loads((default_run / "results/models/toy_llava/training.json").read_text())["heldout_accuracy"]
    keys = [*task.QUESTION_TYPES, *(f"position/{c}" for c in task.CORNERS)]
    assert all(acc[k] >= 0.95 for k in keys), acc


def test_validation_attention_checks(default_run):
    """The trained model looks at the objects (lift well above 1) while its untrained twin spreads
    attention evenly (lift ≈ 1), and the trained model's attention is more concentrated."""
    table = pd.read_csv(default_run / "results/tables/validation.csv")
    assert set(table["check"]) == {"answers_correct", "generated_answers_correct", "object_lift", "entropy_lower",
                                   "effective_span_lower", "gini_higher"}
    assert set(table.loc[table.check == "answers_correct", "question"]) == {"top_left", "shape", "colour", "count"}
    assert table["observed"].notna().all()
    lift = table[table.check == "object_lift"].set_index("model")["observed"]
    assert lift["toy_llava"] > 2 * lift["toy_llava_untrained"]
    attention = table[~table.check.str.endswith("answers_correct")]
    assert attention["passed"].astype(str).str.lower().eq("true").all(), table.to_string()


def test_validation_table_all_checks_pass(default_run):
    table = pd.read_csv(default_run / "results/tables/validation.csv")
    assert table["passed"].astype(str).str.lower().eq("true").all(), table.to_string()


def test_contrasts_of_the_default_run(default_run):
    """Every contrast table and figure is there for every contrast and model; on the corner pairs the
    trained model, which answers the corner question from the image, has heads whose ROI mass rises
    significantly when the object is there, and so do its rollout maps, while the untrained model's
    rollout through the language model does not move."""
    cfg = load_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    tables = default_run / "results/tables"
    cells = {(c, m) for c in cfg["contrasts"] for m in cfg["models"]}
    for name in ("heads", "quadrants", "divergence", "divergence_summary", "encoder", "encoder_divergence",
                 "encoder_divergence_summary", "rollout", "causal", "causal_draws", "causal_heads"):
        t = pd.read_csv(tables / f"contrast_{name}.csv")
        assert set(map(tuple, t[["contrast", "model"]].drop_duplicates().values)) == cells, name
    heads = pd.read_csv(tables / "contrast_heads.csv")
    corner = heads[(heads["contrast"] == "corner") & (heads["model"] == "toy_llava")]
    # a head whose maps are undefined (almost no attention on the image) in a pair leaves that pair out
    assert corner["n_pairs"].between(0, cfg["images"]["synthetic"]["corner_pairs"]).all()
    top = corner.loc[corner["rank"] == 1].iloc[0]
    assert top["n_pairs"] == cfg["images"]["synthetic"]["corner_pairs"]
    assert top["significant"] and top["ci_low"] > 0
    rollout = pd.read_csv(tables / "contrast_rollout.csv").set_index(["contrast", "model", "form"])
    assert rollout.loc[("corner", "toy_llava", "llm_x_encoder"), "significant"]
    assert not rollout.loc[("corner", "toy_llava_untrained", "llm"), "significant"]
    causal = pd.read_csv(tables / "contrast_causal.csv")
    draws = pd.read_csv(tables / "contrast_causal_draws.csv")
    assert len(draws) == sum(len(cc["causal"]["ks"]) * cc["causal"]["n_random"] * len(cfg["models"])
                             for cc in cfg["contrasts"].values())
    assert causal["percentile"].between(0, 100).all() and (causal["draw"] == "ranked").all()
    # the null draws from the heads the ranking could choose: those with a rank (a defined map)
    for (c, m), d in draws.groupby(["contrast", "model"]):
        h = heads[(heads["contrast"] == c) & (heads["model"] == m)]
        ranked = {f"{r.layer}.{r.head}" for r in h.itertuples() if pd.notna(r.rank)}
        assert {x for label in d["heads"] for x in label.split(";")} <= ranked, (c, m)
    singles = pd.read_csv(tables / "contrast_causal_heads.csv")
    assert len(singles) == sum(max(cc["causal"]["ks"]) * len(cfg["models"]) for cc in cfg["contrasts"].values())
    for c, m in cells:
        for p in ("top_heads", "head_heatmap", "encoder_divergence", "overlay", "causal"):
            assert (default_run / f"results/plots/contrasts/{c}/{m}/{p}.png").stat().st_size > 10_000


def test_pruning_of_the_default_run(default_run):
    """Offline scores for every model, online ablation tables for the trained model on the held-out
    evaluation set at the three scaled budgets; the trained model answers the held-out questions, its
    attention-based scores find the objects far above chance, and dropping tokens cuts the FLOPs."""
    cfg = load_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    tables = default_run / "results/tables"
    off = pd.read_csv(tables / "pruning_offline.csv")
    assert set(off["model"]) == set(cfg["models"]) and sorted(off["budget"].unique()) == [7, 14, 21]
    fastv = off[(off["model"] == "toy_llava") & (off["scorer"] == "fastv")]
    assert (fastv["recall_ci_low"] > 2 * fastv["chance"]).all()
    n_items = cfg["pruning"]["online"]["n_items"]
    for study in ("study_a", "study_b", "published"):
        t = pd.read_csv(tables / f"pruning_{study}.csv")
        assert set(t["model"]) == {"toy_llava"} and (t["n_items"] == n_items).all(), study
        assert t["scorer"].str.startswith("random:").any() and "pooling" in set(t["scorer"])
        assert (t["unpruned_accuracy"] >= 0.9).all() and t["ci_low"].le(t["accuracy"]).all()
        assert (t["flops_fraction"] < 1).all()
    ranks = pd.read_csv(tables / "pruning_ranks.csv")
    assert len(ranks) == 3 * 3 * 2  # studies × budgets × (accuracy, recall)
    speed = pd.read_csv(tables / "pruning_speed.csv")
    assert speed["mode"].iloc[0] == "none" and speed["n_runs"].iloc[0] == n_items
    for p in ("offline", "study_a_drop", "study_b_drop", "published_drop"):
        assert (default_run / f"results/plots/pruning/toy_llava/{p}.png").stat().st_size > 10_000


def test_learned_pruners_of_the_default_run(default_run):
    """Every configured variant is trained (report rows up to the last step, a learnable w that moved, a
    fixed one that did not) and compared on the same questions and budgets as the ablations, beside
    FastV, the best head/query strategy and the baselines."""
    cfg = load_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    lc = cfg["pruning"]["learned"]
    tables = default_run / "results/tables"
    training = pd.read_csv(tables / "pruner_training.csv")
    last = training[training["step"] == lc["train"]["steps"]].set_index("variant")
    assert sorted(last.index) == sorted(v["name"] for v in lc["variants"])
    for v in lc["variants"]:
        w = last.loc[v["name"], "attn_weight"]
        if not v["use_attn_residual"]:
            assert np.isnan(w)
        elif v["learnable_attn_weight"]:
            assert w != v["attn_residual_weight"]
        else:
            assert w == v["attn_residual_weight"]
    t = pd.read_csv(tables / "pruning_learned.csv")
    assert (t["n_items"] == cfg["pruning"]["online"]["n_items"]).all() and sorted(t["budget"].unique()) == [7, 14, 21]
    assert {f"learned:{v['name']}" for v in lc["variants"]} | {"fastv", "pooling"} <= set(t["scorer"])
    assert (t["study"].isin(["study_a", "study_b"])).sum() == 3  # the best strategy, at each budget
    for p in ("learned", "pruner_training"):
        assert (default_run / f"results/plots/pruning/toy_llava/{p}.png").stat().st_size > 10_000


def _report_data(html: str, name: str) -> dict:
    """The JSON object the Snakemake report embeds as ``var {name} = {...};`` on one line."""
    start = html.index(f"var {name} = {{") + len(f"var {name} = ")
    return json.loads(html[start:html.index("\n", start)].strip().rstrip(";"))


def test_report_renders_in_a_browser(default_run):
    """``snakemake --report`` bundles every table and figure of the run; headless Chromium renders
    the landing page (what ran, the stages) and decodes every figure; a screenshot is kept beside it."""
    import base64

    from tests.browser import chromium, dump_dom, screenshot

    browser = chromium()
    if browser is None:
        pytest.skip("needs Debian's chromium package (or root and apt-get to install it)")
    snakemake(default_run, "--report", "report.html")
    page = default_run / "report.html"
    html = page.read_text()

    produced = sorted(p for d in ("tables", "summaries", "plots") for p in (default_run / "results" / d).rglob("*")
                      if p.suffix in {".csv", ".png"})
    results = _report_data(html, "results")
    for p in produced:
        key = str(p.relative_to(default_run))
        assert key in results, f"{key} is not in the report"
        data = base64.b64decode(results[key]["data_uri"].split("base64,", 1)[1])
        assert data == p.read_bytes(), f"{key}: the report holds other bytes"
        assert results[key]["caption"].strip(), f"{key} has no caption"
    # the report's menu lists the categories sorted by name (snakemake's menu.js), hence the numbers
    assert sorted(_report_data(html, "categories")) == ["1. Overview", "2. Model", "3. Contrasts", "4. Pruning",
                                                     "5. Attribution", "6. Metric summaries", "7. Metric plots",
                                                     "8. Samples"]

    profile = default_run / "chromium-profile"
    dom = dump_dom(browser, page, profile)
    app = dom[dom.index('<div id="app">'):]
    for text in ("What ran", "How to read it", "1. Overview", "3. Contrasts", "4. Pruning", "5. Attribution",
                 "8. Samples",
                 "toy_llava_untrained",
                 "Is there anything in the top left corner?"):
        assert text in app, f"the rendered report lacks {text!r}"

    pngs = [results[str(p.relative_to(default_run))]["data_uri"] for p in produced if p.suffix == ".png"]
    gallery = default_run / "figures.html"
    gallery.write_text("<html><body>" + "".join(f'<img src="{u}">' for u in pngs) + "<script>"
                       "window.onload = () => document.body.setAttribute('data-decoded', "
                       "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length);"
                       "</script></body></html>")
    decoded = dump_dom(browser, gallery, profile)
    assert f'data-decoded="{len(pngs)}"' in decoded, f"{len(pngs)} figures, not all decoded"

    screenshot(browser, page, profile, default_run / "report.png")


def test_attribution_of_the_default_run(default_run):
    """Every map of every attributed sample, integrated gradients complete, the ranking of every map by each
    faithfulness score, and on the trained model the best map's deletion curve falls below the random
    floor's with its interval clear of 0; the modality gap and alignment across every layer; the figures."""
    from vlmattn.attribution.faithfulness import SCORES
    from vlmattn.attribution.options import attribution_samples
    from vlmattn.attribution.store import MAP_KINDS

    cfg = load_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    chosen = attribution_samples(cfg, samples(cfg))
    tables = default_run / "results/tables"
    s = pd.read_csv(tables / "attribution_samples.csv", keep_default_na=False)
    assert set(zip(s["image"], s["question"], strict=True)) == {(x.image, x.question) for x in chosen}
    assert (s["ig_relative_error"].astype(float) < 1e-2).all()
    assert (s["ig_pixels_delta"].astype(float).abs() < 1e-2).all()
    maps = pd.read_csv(tables / "attribution_maps.csv")
    assert len(maps) == len(chosen) * len(MAP_KINDS)
    rank = pd.read_csv(tables / "faithfulness.csv")
    assert len(rank) == len(SCORES) * len(MAP_KINDS)
    deletion = rank[rank["score"] == "deletion"].sort_values("rank")
    best = deletion.iloc[0]
    assert best["map"] != "random" and best["vs_random_high"] < 0
    text = json.loads((default_run / "results/models/toy_llava/config.json").read_text())["text_config"]
    gap = pd.read_csv(tables / "modality_gap.csv")
    assert list(gap["layer"]) == list(range(text["num_hidden_layers"] + 1))
    assert gap["centroid_distance"].between(0, 2).all() and gap["separability"].between(0, 1).all()
    align = pd.read_csv(tables / "alignment.csv")
    assert len(align) == len(chosen) * 2 * (text["num_hidden_layers"] + 1)
    for f in ("faithfulness", "overlays", "modality_gap"):
        assert (default_run / f"results/plots/attribution/toy_llava/{f}.png").stat().st_size > 10_000
