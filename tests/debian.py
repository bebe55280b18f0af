"""Debian packages for tests that need system software (installed as root with apt-get)."""

from __future__ import annotations

import os
import subprocess


def apt_install(*packages: str) -> None:
    """``apt-get update`` then ``apt-get install`` of ``packages``, without recommends or prompts."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env,
                   capture_output=True)
