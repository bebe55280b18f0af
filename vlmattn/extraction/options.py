"""The ``extraction`` block → what the extraction jobs read."""

from __future__ import annotations


def extract_options(cfg: dict) -> dict:
    """What an ``extract`` job reads: the validated ``extraction`` block (defaults filled in) without its
    ``resources`` (which set the job's threads and cluster resources, not what it writes): every
    setting an extracted file depends on (its cache key, :func:`vlmattn.extraction.jobs.sample_cache_key`).
    For a block outside a validated config, :func:`vlmattn.config.extraction_settings` fills the
    schema's defaults in."""
    return {k: v for k, v in cfg["extraction"].items() if k != "resources"}
