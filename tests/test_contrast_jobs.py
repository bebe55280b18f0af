"""The contrast jobs the workflow runs: analyses from cache files, labelled tables, merged tables, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_contrasts import MAPS, PLANTED, STATS, planted_pairs
from vlmattn.contrasts import analyses, heads, jobs
from vlmattn.contrasts.analyses import TABLES, analysis_options
from vlmattn.contrasts.options import contrast_options
from vlmattn.errors import InputError
from vlmattn.store import write_sample
from vlmattn.workflow import load_config

LABELS = {"contrast": "c", "model": "m"}


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    a, b = planted_pairs(n_pairs=8)
    files = {}
    for side, samples in (("a", a), ("b", b)):
        files[side] = []
        for i, s in enumerate(samples):
            s.attrs.update(image_id=f"img_{i}_{side}", generated_text="yes" if side == "a" else "no")
            path = d / f"{side}{i}.h5"
            write_sample(path, s, attention_dtype="float32")
            files[side].append(str(path))
    return a, b, files


def options():
    cfg = load_config({"questions": {"q": {"text": "Anything top-left?"}},
                       "images": {"synthetic": {"scenes": ["triangle_topleft", "square_only"]}},
                       "models": {"m": {"family": "llava", "path": "x"}},
                       "contrasts": {"c": {"question": "q", "pairs": [["triangle_topleft", "square_only"]],
                                           "roi": "top_left", "statistics": {"n_resamples": 999},
                                           "causal": {"enabled": False}}}})
    return contrast_options(cfg, "c")


def test_analysis_options_are_the_slices_each_reads():
    o = options()
    assert analysis_options(o, "heads") == {"roi": "top_left", "maps": o["maps"], "statistics": o["statistics"]}
    assert set(analysis_options(o, "divergence")) == {"maps", "head_pooling", "divergence", "statistics"}
    assert "causal" not in {k for a in TABLES for k in analysis_options(o, a)}
    with pytest.raises(ValueError, match="unknown contrast analysis 'nope'"):
        analysis_options(o, "nope")


def test_heads_job_reads_the_cache_and_labels_the_table(pair_files, tmp_path):
    a, b, files = pair_files
    o = analysis_options(options(), "heads")
    out = tmp_path / "heads.csv"
    jobs.contrast("heads", files["a"], files["b"], o, LABELS, [str(out)])
    t = pd.read_csv(out)
    assert list(t.columns[:2]) == ["contrast", "model"] and (t["contrast"] == "c").all()
    # the same table as the library on the in-memory samples (float32 round trip of the maps aside)
    ref = heads.head_contrast(a, b, "top_left", **MAPS, **{**STATS, "n_resamples": 999})
    top = t.loc[t["rank"] == 1].iloc[0]
    assert (top["layer"], top["head"]) == PLANTED and top["significant"]
    np.testing.assert_allclose(t["diff"], ref["diff"], atol=1e-6)
    np.testing.assert_array_equal(t["rank"], ref["rank"])
    # rerun: byte-identical
    again = tmp_path / "again.csv"
    jobs.contrast("heads", files["a"], files["b"], o, LABELS, [str(again)])
    assert again.read_bytes() == out.read_bytes()


def test_quadrant_and_divergence_jobs_write_every_table(pair_files, tmp_path):
    _, _, files = pair_files
    for analysis in ("quadrants", "divergence"):
        outs = [str(tmp_path / f"{t}.csv") for t in TABLES[analysis]]
        jobs.contrast(analysis, files["a"], files["b"], analysis_options(options(), analysis), LABELS, outs)
        for p in outs:
            assert len(pd.read_csv(p)) > 0
    q = pd.read_csv(tmp_path / "quadrants.csv", dtype={"layer": str})
    assert set(q["layer"]) == {"all", "0", "1"}
    top_left = q[(q["layer"] == "all") & (q["quadrant"] == "top_left")].iloc[0]
    assert top_left["diff"] > 0  # the planted head moves mass onto the top-left quadrant


def test_bad_pairs_stop_with_one_line_naming_the_contrast(pair_files, tmp_path):
    _, _, files = pair_files
    with pytest.raises(SystemExit, match=r"vlmattn: contrast c \(m\), heads: samples_a and samples_b"):
        jobs.contrast("heads", files["a"], files["b"][:-1], analysis_options(options(), "heads"), LABELS,
                      [str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()
    assert issubclass(InputError, Exception)


def test_contrast_table_concatenates_in_order_cells_as_written(tmp_path):
    p1, p2 = tmp_path / "1.csv", tmp_path / "2.csv"
    p1.write_text("contrast,model,layer,diff\nc,m1,0,0.1\n")
    p2.write_text("contrast,model,layer,diff\nc,m2,all,NA\n")
    jobs.contrast_table([str(p1), str(p2)], str(tmp_path / "out.csv"))
    assert (tmp_path / "out.csv").read_text() == "contrast,model,layer,diff\nc,m1,0,0.1\nc,m2,all,NA\n"


def test_run_rejects_an_unknown_analysis():
    with pytest.raises(ValueError, match="unknown contrast analysis"):
        analyses.run("nope", [], [], {})


def test_figures_render(pair_files, tmp_path):
    from vlmattn.contrasts import plots

    a, b, files = pair_files
    t = heads.head_contrast(a, b, "top_left", **MAPS, **{**STATS, "n_resamples": 999})
    plots.top_heads(t, tmp_path / "top.png", title="c · m", k=4)
    plots.head_heatmap(t, tmp_path / "heat.png", title="c · m")
    summary = pd.DataFrame({"source": "received", "layer": ["0", "1", "all"], "js": [0.1, 0.2, 0.15],
                            "js_ci_low": [0.05, 0.1, 0.1], "js_ci_high": [0.15, 0.3, 0.2], "js_null": [0.1, 0.1, 0.1]})
    plots.encoder_divergence(summary, tmp_path / "enc.png", title="c · m")
    plots.encoder_divergence(summary.iloc[2:], tmp_path / "enc_empty.png", title="c · m")
    plots.overlays(a[:2], b[:2], tmp_path / "overlay.png", roi="top_left", labels=("A", "B"), title="c · m")
    rng = np.random.default_rng(0)
    draws = pd.DataFrame({"k": np.repeat([1, 3], 20), "draw": np.tile(np.arange(20), 2),
                          "delta_logprob": rng.normal(-0.1, 0.05, 40)})
    summ = pd.DataFrame({"k": [1, 3], "delta_logprob": [-0.5, -0.9], "percentile": [0.0, 0.0], "mode": "zero"})
    plots.causal(summ, draws, tmp_path / "causal.png", title="c · m")
    for name in ("top", "heat", "enc", "enc_empty", "overlay", "causal"):
        from PIL import Image

        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.size[0] > 200 and im.size[1] > 200
