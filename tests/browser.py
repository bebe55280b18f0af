"""Headless Chromium (Debian's ``chromium`` package) for tests that render HTML."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.debian import apt_install

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium() -> str | None:
    """The browser's path, installing Debian's package first when it is missing and this is root with
    apt-get; None when neither is possible."""
    found = shutil.which("chromium")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    apt_install("chromium")
    return shutil.which("chromium")


def _run(browser: str, page: Path, profile: Path, *args: str, budget_ms: int) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args,
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=180, check=True)


def dump_dom(browser: str, page: Path, profile: Path, budget_ms: int = 10_000) -> str:
    """The page's DOM after its scripts ran (``budget_ms`` of virtual time)."""
    return _run(browser, page, profile, "--dump-dom", budget_ms=budget_ms).stdout


def screenshot(browser: str, page: Path, profile: Path, out: Path, size: tuple[int, int] = (1400, 1000),
               budget_ms: int = 10_000) -> None:
    """A PNG of the rendered page at ``size`` (width, height) pixels."""
    _run(browser, page, profile, f"--screenshot={out.resolve()}", f"--window-size={size[0]},{size[1]}",
         budget_ms=budget_ms)
    if not out.is_file():
        raise AssertionError(f"chromium wrote no screenshot of {page}")
