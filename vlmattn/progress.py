"""Progress bars for long jobs (tqdm): live on a terminal, sparse in a log file."""

from __future__ import annotations

import sys

#: seconds between two updates of a progress bar written to a file (a job's log)
LOG_INTERVAL = 10.0


class _Lines:
    """A file for tqdm that turns each redraw (``"\\r" + bar``) into one line of its own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on the current ``sys.stderr``: redrawn at most every 0.5 s on a
    terminal; in a log file (not a TTY) one plain line at most every :data:`LOG_INTERVAL` seconds
    (and at the end), so a long job's log stays short and readable."""
    from tqdm.auto import tqdm

    if sys.stderr.isatty():
        kwargs.setdefault("mininterval", 0.5)
        return tqdm(iterable, file=sys.stderr, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL)
    kwargs.setdefault("maxinterval", LOG_INTERVAL * 3)
    return tqdm(iterable, file=_Lines(sys.stderr), ascii=True, dynamic_ncols=False, ncols=100, **kwargs)
