"""Per-sample Parquet tables and their summaries over samples, against pandas and scipy recomputed
on the same rows."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from scipy import stats

from bench.scale import SHAPES, synthetic_sample
from tests import REPO
from vlmattn.metrics import METRICS, compute_table, get_metric
from vlmattn.metrics.options import metric_params
from vlmattn.summaries import STAT_COLUMNS, means, pooled, summarise_files, summarise_tables
from vlmattn.tables import read_parquet, write_parquet
from vlmattn.workflow import load_config


def table(seed: int, n_samples: int) -> pd.DataFrame:
    """Per-sample rows with two keys (one nullable), a value with gaps and an integer value."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_samples):
        for layer in range(3):
            for pool in ("first", "each"):
                rows.append({"model": "m", "image": f"im{i}", "question": "qa" if i % 3 else "qb", "step_pool": pool,
                             "step": i % 4 if pool == "first" else layer, "layer": layer,
                             "x": np.nan if rng.random() < 0.2 else rng.normal(layer, 1 + layer),
                             "k": int(rng.integers(0, 5))})
    df = pd.DataFrame(rows)
    df["step"] = df["step"].astype("Int64")
    return df


def keyed(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``df`` indexed by its key cells as one text label (missing keys included)."""
    d = df.reset_index() if any(k not in df.columns for k in keys) else df
    label = d[keys].astype(object).where(d[keys].notna(), "<NA>").astype(str).agg("|".join, axis=1)
    return d.set_index(label)


def reference(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """n, mean, sd (ddof 1) and the t interval per group, by pandas and scipy."""
    d = df.copy()
    d.loc[d["step_pool"] != "each", "step"] = pd.NA
    g = d.groupby(["model", "question", *keys], dropna=False)[value]
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "sd": g.std(ddof=1)})
    half = stats.t.ppf(0.975, out["n"] - 1) * out["sd"] / np.sqrt(out["n"])
    return out.assign(ci_low=out["mean"] - half, ci_high=out["mean"] + half)


def test_summary_equals_pandas_and_scipy_on_the_same_rows_in_any_batching():
    df = table(0, 40)
    keys = ["step_pool", "step", "layer"]
    whole = summarise_tables([df], keys, ["x", "k"])
    assert list(whole.columns) == ["model", "question", *keys, *STAT_COLUMNS]
    cuts = [0, 7, 8, 61, 150, len(df)]  # batches that split groups and samples anywhere
    batched = summarise_tables([df.iloc[a:b] for a, b in zip(cuts, cuts[1:], strict=False)], keys, ["x", "k"])
    pd.testing.assert_frame_equal(whole, batched, rtol=1e-12)
    for value in ("x", "k"):
        ref = keyed(reference(df, keys, value), ["model", "question", *keys])
        got = keyed(whole[whole["quantity"] == value], ["model", "question", *keys]).reindex(ref.index)
        assert (got["n"].to_numpy() == ref["n"].to_numpy()).all()
        for col in ("mean", "sd", "ci_low", "ci_high"):
            np.testing.assert_allclose(got[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-10, atol=1e-12)
    # step is a key only for `each` views: `first` rows of every t* share one group
    first = whole[(whole["step_pool"] == "first") & (whole["quantity"] == "k")]
    assert first["step"].isna().all() and len(first) == 2 * 3  # questions × layers


def test_pooled_means_are_the_mean_over_all_rows():
    df = table(1, 30)
    w = means(summarise_tables([df], ["step_pool", "step", "layer"], ["x"]))
    got = pooled(w[w["step_pool"] == "first"], ["layer"], ["x"])["x"]
    ref = df[df["step_pool"] == "first"].groupby("layer")["x"].mean()
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-12)


def test_parquet_shards_are_columnar_float32_dictionary_and_read_as_one_dataset(tmp_path):
    df = table(2, 12)
    df["head"] = np.where(df["layer"] == 0, "mean", df["layer"].astype(str))
    for k, part in enumerate((df.iloc[:30], df.iloc[30:])):
        (tmp_path / "m").mkdir(exist_ok=True)
        assert write_parquet(iter([part.iloc[:10], part.iloc[10:]]), tmp_path / "m" / f"{k}.parquet") == len(part)
    schema = pq.read_schema(tmp_path / "m" / "0.parquet")
    assert str(schema.field("x").type) == "float" and str(schema.field("k").type) == "int32"
    assert str(schema.field("head").type).startswith("dictionary<values=string")
    meta = pq.ParquetFile(tmp_path / "m" / "0.parquet").metadata.row_group(0).column(0)
    assert meta.compression == "ZSTD"
    back, ref = read_parquet(tmp_path / "m"), df  # the folder's files in name order, rows as written
    np.testing.assert_array_equal(back["x"].to_numpy(float), ref["x"].to_numpy(np.float32).astype(float))
    assert list(back["step"]) == list(ref["step"]) and list(back["head"].astype(str)) == list(ref["head"])
    # rewriting the same rows gives the same bytes
    write_parquet([df.iloc[:30]], tmp_path / "again.parquet")
    write_parquet([df.iloc[:30]], tmp_path / "again2.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "again2.parquet").read_bytes()


@pytest.fixture(scope="module")
def metric_tables(tmp_path_factory):
    """Every default metric on four toy-shaped samples (two questions), in two shard files each."""
    tmp = tmp_path_factory.mktemp("metric_tables")
    cfg = load_config(yaml.safe_load((REPO / "config.yaml").read_text()), base_dir=str(REPO))
    rng = np.random.default_rng(0)
    samples = [synthetic_sample(rng, f"im{i}", "q", size=64, shape=SHAPES["toy"]) for i in range(4)]
    out = {}
    for name in METRICS:
        mc = metric_params(name, cfg["metrics"])
        frames = [compute_table(name, s, mc, {"model": "m", "image": f"im{i}", "question": f"q{i % 2}"})
                  for i, s in enumerate(samples)]
        files = []
        for k in range(2):
            f = tmp / name / "m" / f"{k}.parquet"
            f.parent.mkdir(parents=True, exist_ok=True)
            write_parquet(frames[2 * k:2 * k + 2], f)
            files.append(str(f))
        out[name] = (pd.concat(frames, ignore_index=True), files, mc)
    return out


@pytest.mark.parametrize("name", METRICS)
def test_each_metric_table_reads_back_and_its_summary_matches_pandas(metric_tables, name, tmp_path):
    full, files, mc = metric_tables[name]
    module = get_metric(name)
    back = read_parquet(files[0]).reset_index(drop=True)
    assert list(back.columns) == list(full.columns)
    n0 = len(back)
    for col in full.columns:
        a, b = back[col], full[col].iloc[:n0].reset_index(drop=True)
        if pd.api.types.is_float_dtype(b):
            np.testing.assert_array_equal(a.to_numpy(float), b.to_numpy(float).astype(np.float32).astype(float))
        else:
            assert list(a.astype(object).where(a.notna(), None)) == list(b.astype(object).where(b.notna(), None)), col
    s = summarise_files(files, module.SUMMARY_KEYS, getattr(module, "SUMMARY_SKIP", ()))
    keys = ["model", "question", *module.SUMMARY_KEYS]
    f32 = full.copy()
    for col in f32.columns:
        if pd.api.types.is_float_dtype(f32[col]):
            f32[col] = f32[col].astype(np.float32).astype(float)
    if "step" in keys and "step_pool" in keys:
        f32["step"] = f32["step"].where(f32["step_pool"] == "each")
    for q in s["quantity"].unique():
        got = keyed(s[s["quantity"] == q], keys)
        g = f32.assign(_v=f32[q].astype(float)).groupby(keys, dropna=False)["_v"]
        ref = keyed(pd.DataFrame({"n": g.count(), "mean": g.mean(), "sd": g.std(ddof=1)}), keys).reindex(got.index)
        assert (got["n"].to_numpy() == ref["n"].to_numpy()).all(), q
        np.testing.assert_allclose(got["mean"].to_numpy(float), ref["mean"].to_numpy(float), rtol=1e-9, atol=1e-12,
                                   err_msg=q)
        np.testing.assert_allclose(got["sd"].to_numpy(float), ref["sd"].to_numpy(float), rtol=1e-7, atol=1e-9,
                                   err_msg=q)
    assert len(s) > 0 and set(s["question"]) == {"q0", "q1"}
