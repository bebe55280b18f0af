"""Progress bars for long jobs (tqdm): live on a terminal, sparse in a log file."""

from __future__ import annotations

import sys

#: seconds between two updates of a progress bar written to a file (a job's log)
LOG_INTERVAL = 10.0


def progress(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on the current ``sys.stderr``: redrawn at most every 0.5 s on a
    terminal; in a log file (not a TTY) at most every :data:`LOG_INTERVAL` seconds, one line per
    update, so a long job's log stays short."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else LOG_INTERVAL)
    kwargs.setdefault("file", sys.stderr)
    if not interactive:
        kwargs.setdefault("ascii", True)
    return tqdm(iterable, **kwargs)
