"""Summaries over samples: per group of a table's key columns, the number of samples with a defined
value, the mean, the standard deviation and a 95 % interval of each quantity, computed by streaming
over the table's Parquet shard files in bounded memory.

A per-sample table has one row per (sample, key…); a summary has one row per (model, question, key…,
quantity) with

* ``n``        the number of rows with a defined (non-missing) value, i.e. of samples (and, where a
  sample has several rows for one key, such as objects or regions of one kind, of those rows);
* ``mean``     x̄ = Σ x / n;
* ``sd``       s = √(Σ (x − x̄)² / (n − 1)) (NaN for n < 2);
* ``ci_low``, ``ci_high``  x̄ ∓ t₀.₉₇₅,ₙ₋₁ · s / √n (Student's t; NaN for n < 2).

Groups whose key column ``step`` names a decode row are merged across samples only for
``step_pool = each`` (the row index is the key); for ``first`` (t* varies per sample), ``last`` and
``mean`` the summary's ``step`` is empty.

Streaming. The shard files are read in sorted order, ``batch_rows`` rows at a time
(``pyarrow.parquet.ParquetFile.iter_batches``); each batch is grouped with pyarrow
(``Table.group_by`` on one thread: count, mean and population variance per group) and merged into the
running per-group ``(n, mean, M2)`` with the parallel-variance rule (Chan et al.):
``n = Σ nᵢ``, ``mean = Σ nᵢ x̄ᵢ / n``, ``M2 = Σ (M2ᵢ + nᵢ (x̄ᵢ − mean)²)``. Memory is O(groups + one
batch), independent of the number of samples; the order of reads and merges is fixed, so a rerun
gives a byte-identical summary. pyarrow does the work because it already reads and writes the shard
files (no second engine), its group-by runs on Arrow batches without converting them to pandas, and
on one thread its results do not depend on scheduling (DuckDB and polars aggregate in parallel, in
an order that can change the last bits of a mean).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

ID_KEYS = ["model", "question"]
STAT_COLUMNS = ["quantity", "n", "mean", "sd", "ci_low", "ci_high"]
#: rows per batch read from a shard file
BATCH_ROWS = 1 << 20


def value_columns(schema, keys: list[str], skip: Iterable[str] = ()) -> list[str]:
    """The quantities a summary holds: the numeric and boolean columns of ``schema`` (a pyarrow schema)
    that are not ids (``model, image, question``), keys or in ``skip``, in table order."""
    import pyarrow as pa

    out = []
    for field in schema:
        if field.name in {"model", "image", "question", *keys, *skip}:
            continue
        t = field.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            out.append(field.name)
    return out


def _batch_moments(table, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Per group of ``keys`` of one Arrow table: ``{v}:n``, ``{v}:mean``, ``{v}:m2`` (n × population
    variance) of each value column, groups in order of first appearance."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "step" in keys and "step_pool" in keys:
        each = pc.equal(table["step_pool"].cast(pa.string()), "each")
        step = table["step"]
        table = table.set_column(table.schema.get_field_index("step"), "step",
                                 pc.if_else(pc.fill_null(each, False), step, pa.nulls(len(table), step.type)))
    cols = {}
    for v in values:
        cols[v] = table[v].cast(pa.float64())
    t = pa.table({**{k: table[k] for k in keys}, **cols})
    aggs = []
    for v in values:
        aggs += [(v, "count"), (v, "mean"), (v, "variance", pc.VarianceOptions(ddof=0))]
    g = t.group_by(keys, use_threads=False).aggregate(aggs)
    out = {}
    for k in keys:
        col = g[k]
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        # integer keys stay integers (nullable) rather than turning float where a key is missing
        out[k] = col.to_pandas(types_mapper=lambda t: pd.Int64Dtype() if pa.types.is_integer(t) else None)
    for v in values:
        n = g[f"{v}_count"].to_numpy().astype(np.float64)
        out[f"{v}:n"] = n
        out[f"{v}:mean"] = g[f"{v}_mean"].to_numpy(zero_copy_only=False).astype(np.float64)
        out[f"{v}:m2"] = g[f"{v}_variance"].to_numpy(zero_copy_only=False).astype(np.float64) * n
    return pd.DataFrame(out)


def _merge(parts: list[pd.DataFrame], keys: list[str], values: list[str]) -> pd.DataFrame:
    """Combine per-group moments of several parts with the parallel-variance rule; groups in order of
    first appearance."""
    d = pd.concat(parts, ignore_index=True)
    gid = d.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    _, first = np.unique(gid, return_index=True)
    out = d.iloc[first][keys].reset_index(drop=True)
    size = len(first)
    for v in values:
        n = d[f"{v}:n"].to_numpy()
        m = np.where(n > 0, d[f"{v}:mean"].to_numpy(), 0.0)
        m2 = np.where(n > 0, d[f"{v}:m2"].to_numpy(), 0.0)
        ntot = np.bincount(gid, n, size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(gid, n * m, size) / ntot
        dev = np.where(n > 0, m - np.nan_to_num(mean)[gid], 0.0)
        out[f"{v}:n"] = ntot
        out[f"{v}:mean"] = np.where(ntot > 0, mean, np.nan)
        out[f"{v}:m2"] = np.bincount(gid, m2 + n * dev**2, size)
    return out


def summarise_tables(tables: Iterable, keys: list[str], values: list[str]) -> pd.DataFrame:
    """The summary (:data:`STAT_COLUMNS` after ``model, question, *keys``) of a stream of Arrow tables
    (or pandas DataFrames) with the columns ``model, question, *keys, *values``."""
    import pyarrow as pa

    group_keys = ID_KEYS + list(keys)
    acc = None
    for t in tables:
        if isinstance(t, pd.DataFrame):
            t = pa.Table.from_pandas(t, preserve_index=False)
        if len(t) == 0:
            continue
        part = _batch_moments(t, group_keys, values)
        acc = part if acc is None else _merge([acc, part], group_keys, values)
    return _finish(acc, group_keys, values)


def _finish(acc: pd.DataFrame | None, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Long format: one row per group and quantity, groups stably sorted by model and question."""
    from scipy import stats

    if acc is None:
        return pd.DataFrame(columns=keys + STAT_COLUMNS)
    acc = acc.sort_values(ID_KEYS, kind="stable").reset_index(drop=True)
    frames = []
    for v in values:
        n = acc[f"{v}:n"].to_numpy()
        mean = acc[f"{v}:mean"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.where(n > 1, np.sqrt(acc[f"{v}:m2"].to_numpy() / np.maximum(n - 1, 1)), np.nan)
            half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(n), np.nan)
        f = acc[keys].copy()
        f["quantity"] = v
        f["n"] = n.astype(np.int64)
        f["mean"], f["sd"], f["ci_low"], f["ci_high"] = mean, sd, mean - half, mean + half
        f["_order"] = np.arange(len(f))
        frames.append(f)
    d = pd.concat(frames, ignore_index=True)
    d["_q"] = d["quantity"].map({v: i for i, v in enumerate(values)})
    d = d.sort_values(["_order", "_q"], kind="stable").drop(columns=["_order", "_q"])
    return d.reset_index(drop=True)


def summarise_files(files: list[str], keys: list[str], skip: Iterable[str] = (),
                    batch_rows: int = BATCH_ROWS) -> pd.DataFrame:
    """:func:`summarise_tables` over Parquet shard files (read in sorted order, ``batch_rows`` at a time);
    the quantities are :func:`value_columns` of the files' unified schema (``pyarrow.unify_schemas``: a
    column that only some models' tables have, such as ``piece`` or ``marker_share`` of tiled layouts,
    is null in the others' rows, so their groups do not count it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(files)
    if not files:
        return pd.DataFrame(columns=ID_KEYS + list(keys) + STAT_COLUMNS)
    schemas = [pq.read_schema(f) for f in files]
    schema = pa.unify_schemas(schemas)
    values = value_columns(schema, keys, skip)
    columns = ID_KEYS + list(keys) + values

    def batches():
        for f, own in zip(files, schemas, strict=True):
            have = [c for c in columns if c in own.names]
            for b in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=have, use_threads=False):
                t = pa.Table.from_batches([b])
                for c in columns:
                    if c not in own.names:
                        t = t.append_column(schema.field(c), pa.nulls(len(t), schema.field(c).type))
                yield t.select(columns)

    return summarise_tables(batches(), keys, values)


def write_summary(summary: pd.DataFrame, path: str | os.PathLike) -> None:
    """The summary as CSV (:func:`vlmattn.tables.write_table`: fixed float format, atomic)."""
    from .tables import write_table

    write_table(summary, Path(path))


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """A summary CSV, with the text key ``head`` (and ``token``) kept as strings."""
    return pd.read_csv(path, dtype={"head": str, "token": str, "quantity": str})


def means(summary: pd.DataFrame, quantities: list[str] | None = None) -> pd.DataFrame:
    """Wide view of a summary for plotting: one row per group, a column per quantity holding its mean and
    ``n:{quantity}`` its count (``quantities``: all of them by default)."""
    s = summary if quantities is None else summary[summary["quantity"].isin(quantities)]
    keys = [c for c in s.columns if c not in STAT_COLUMNS]
    gid = s.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    _, first = np.unique(gid, return_index=True)
    out = s.iloc[first][keys].reset_index(drop=True)
    for q in (quantities if quantities is not None else list(dict.fromkeys(s["quantity"]))):
        sel = (s["quantity"] == q).to_numpy()
        mean, n = np.full(len(out), np.nan), np.zeros(len(out))
        mean[gid[sel]] = s["mean"].to_numpy(float)[sel]
        n[gid[sel]] = s["n"].to_numpy(float)[sel]
        out[q], out[f"n:{q}"] = mean, n
    return out


def pooled(df: pd.DataFrame, by: list[str], quantities: list[str]) -> pd.DataFrame:
    """Means over the remaining groups of a :func:`means` frame, each group weighted by its count:
    ``Σ nᵢ x̄ᵢ / Σ nᵢ`` — the mean over all the samples' rows the groups hold. Indexed by ``by``."""
    out = {}
    for q in quantities:
        n = df[f"n:{q}"].fillna(0).astype(float)
        x = df[q].astype(float).where(n > 0, 0.0)
        num = (n * x).groupby([df[b] for b in by], sort=True, dropna=False).sum()
        den = n.groupby([df[b] for b in by], sort=True, dropna=False).sum()
        out[q] = num / den.where(den > 0)
    return pd.DataFrame(out)
