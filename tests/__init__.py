"""The test suite; ``REPO`` is the repository it tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
