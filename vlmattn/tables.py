"""The plumbing every wing's jobs share: the job's log, one-line errors, and tables written atomically
and byte-identically (CSV with a fixed float format), the extraction shard index every analysis
reads, and the merge of shard tables into one table in sample order."""

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


def _sample_key(row: list[str]) -> str:
    """Sort key of a metric-table row: ``{model}/{image}__{question}`` (its first three cells)."""
    return f"{row[0]}/{row[1]}__{row[2]}"


def _by_sample(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (text cells, model, image and question first) with its rows stably sorted by
    :func:`_sample_key`."""
    key = (df.iloc[:, 0] + "/" + df.iloc[:, 1] + "__" + df.iloc[:, 2]).to_numpy(dtype=str)
    return df.iloc[np.argsort(key, kind="stable")]


def aggregate(inputs: list[str], out: str) -> None:
    """Merge shard tables into one, rows ordered by sample (``{model}/{image}__{question}``) and, within
    a sample, as written. Each shard is sorted by sample and a sample lives in one shard, so this is a
    streaming k-way merge: cells pass through as written (text such as a generated token ``NA``
    survives), memory stays O(shards). Shards with other columns are concatenated through pandas."""
    import csv
    import heapq

    files = [open(p, newline="") for p in sorted(inputs)]  # noqa: SIM115 - closed below
    try:
        readers = [csv.reader(f) for f in files]
        headers = [next(r, None) for r in readers]
        if any(h != headers[0] for h in headers):
            frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(inputs)]
            write_table(_by_sample(pd.concat(frames, ignore_index=True)), out)
            return
        tmp = atomic_target(Path(out))
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                if headers and headers[0] is not None:
                    w.writerow(headers[0])
                w.writerows(heapq.merge(*readers, key=_sample_key))
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    finally:
        for f in files:
            f.close()


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A metric table, with the text columns ``head`` and ``token`` kept as strings."""
    return pd.read_csv(path, dtype={"head": str, "token": str})
