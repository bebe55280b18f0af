"""How a generated answer is compared with an expected one."""

from __future__ import annotations


def normalise_answer(text: str) -> str:
    """First word, lower-cased, punctuation stripped."""
    words = text.strip().split()
    return words[0].strip(".,!?;:\"'").lower() if words else ""
