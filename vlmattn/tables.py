"""The plumbing every wing's jobs share: the job's log, one-line errors, tables written atomically
and byte-identically (CSV with a fixed float format; per-sample tables as Parquet shard files), and
the extraction shard index every analysis reads."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("vlmattn")

def atomic_target(path: Path) -> Path:
    """A temporary file beside ``path`` (same filesystem, normal permissions) to rename onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def log_to(path: str | os.PathLike) -> None:
    """Send stderr (tracebacks, progress bars) and the ``vlmattn`` logger to the job's log file.
    Hugging Face's own progress bars (weights loading and saving) are switched off there."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(path, "w", buffering=1)  # noqa: SIM115 - lives for the job
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)


@contextlib.contextmanager
def one_line_errors():
    """Bad input stops the job with its one-line message (``vlmattn: ...``) in the log, no traceback;
    the job's outputs are written atomically, so none is left half-written."""
    from .errors import VlmattnError

    try:
        yield
    except VlmattnError as e:
        log.error("%s", e)
        raise SystemExit(f"vlmattn: {e}") from None


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """CSV with a fixed float format (byte-identical on rerun), via a temporary file."""
    write_tables([df], path)


INDEX_COLUMNS = ["model", "image", "question", "file", "cache_key", "prompt_tokens", "new_tokens", "answer"]


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """A shard index (:data:`INDEX_COLUMNS`), text kept as written (an answer ``NA`` stays text)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_tables(frames: list[pd.DataFrame], path: str | os.PathLike) -> None:
    """Rows of ``frames`` in order, as one CSV (format of :func:`write_table`). Frames with the same
    columns are written one after the other, so each value is formatted exactly as in a table of its
    own; otherwise they are concatenated (missing cells empty)."""
    if not frames or any(list(f.columns) != list(frames[0].columns) for f in frames):
        frames = [pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            for k, f in enumerate(frames):
                f.to_csv(out, index=False, header=k == 0, float_format="%.8g", lineterminator="\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _by_sample(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (text cells, model, image and question first) with its rows stably sorted by sample,
    ``{model}/{image}__{question}``."""
    key = (df.iloc[:, 0] + "/" + df.iloc[:, 1] + "__" + df.iloc[:, 2]).to_numpy(dtype=str)
    return df.iloc[np.argsort(key, kind="stable")]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV table, with the text columns ``head`` and ``token`` kept as strings."""
    return pd.read_csv(path, dtype={"head": str, "token": str})


# ------------------------------------------------------------------------------------------ Parquet
#: rows gathered before a Parquet row group is written
ROW_GROUP_ROWS = 1 << 17


def arrow_schema(df: pd.DataFrame):
    """The Parquet schema of a per-sample table: text columns dictionary-encoded strings, floats
    float32, integers (nullable or not) int32, booleans bool; from the columns' dtypes alone, so every
    sample of one metric gets the same schema."""
    import pyarrow as pa

    fields = []
    for col, dtype in df.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            t = pa.bool_()
        elif pd.api.types.is_integer_dtype(dtype):
            t = pa.int32()
        elif pd.api.types.is_float_dtype(dtype):
            t = pa.float32()
        else:
            t = pa.dictionary(pa.int32(), pa.string())
        fields.append(pa.field(col, t))
    return pa.schema(fields)


def parquet_options(schema) -> dict:
    """``pyarrow.parquet.ParquetWriter`` options of a per-sample table: zstd, dictionary pages for the
    text and integer columns, byte-stream split for the float32 values (which zstd then compresses
    about twice as well as plain floats)."""
    import pyarrow as pa

    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    return {"compression": "zstd", "use_dictionary": [f.name for f in schema if f.name not in floats],
            "use_byte_stream_split": floats or False, "write_statistics": True}


def write_parquet(frames, path: str | os.PathLike) -> int:
    """Rows of ``frames`` (an iterable of DataFrames with the same columns, consumed one at a time) as one
    Parquet file (:func:`arrow_schema`, :func:`parquet_options`, row groups of about
    :data:`ROW_GROUP_ROWS` rows), via a temporary file renamed onto ``path``. Byte-identical on rerun.
    Returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = atomic_target(path)
    writer, schema, pending, rows, waiting = None, None, [], 0, 0
    try:
        def flush():
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS * 2)
                pending.clear()

        for df in frames:
            if schema is None:
                schema = arrow_schema(df)
                writer = pq.ParquetWriter(tmp, schema, **parquet_options(schema))
            pending.append(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
            rows, waiting = rows + len(df), waiting + len(df)
            if waiting >= ROW_GROUP_ROWS:
                flush()
                waiting = 0
        if writer is None:  # no rows at all: an empty file with no columns
            writer = pq.ParquetWriter(tmp, pa.schema([]), compression="zstd")
        flush()
        writer.close()
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return rows


def read_parquet(path: str | os.PathLike, **kw) -> pd.DataFrame:
    """A per-sample table (one shard file or a metric's folder of them) as pandas: text columns as
    ``category``, nullable integers as ``Int32``."""
    return pd.read_parquet(path, **kw)
