"""The contrast analyses the workflow runs, by name: which options each reads and which tables it writes.

=============  =====================================================  ==============================
analysis       tables (one row per …)                                 library function
=============  =====================================================  ==============================
heads          ``heads``: LLM (layer, head)                           :func:`.heads.head_contrast`
quadrants      ``quadrants``: (layer | all, quadrant)                 :func:`.quadrants.quadrant_shift`
divergence     ``divergence``: (pair, LLM layer | all);               :func:`.divergence.divergence_table`,
               ``divergence_summary``: LLM layer | all                :func:`.summary.divergence_summary`
               (mean over pairs, interval, B-vs-B reference, p)
encoder        ``encoder``: (source, encoder layer);                  :func:`.encoder.encoder_contrast`,
               ``encoder_divergence``: (source, pair, layer | all);   :func:`.encoder.encoder_divergence`
               ``encoder_divergence_summary``: (source, layer | all)
rollout        ``rollout``: rollout form (``seed``; ``llm`` and           :func:`.rollout.rollout_contrast`
               ``llm_x_encoder`` when the cache holds the LLM rollout)
=============  =====================================================  ==============================

Every analysis reads the pairs ``(files_a[i], files_b[i])`` of one model (HDF5 files of the cache,
opened one at a time) and the slice of :func:`vlmattn.contrasts.options.contrast_options` that
:func:`analysis_options` names, so editing one analysis's options reruns that analysis alone. The
causal check runs the model and is :mod:`.ablation`'s. The encoder analysis leaves the ``cls``
source out for an encoder without a CLS token (Qwen).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence

import pandas as pd

from ..store import read_sample

#: analysis -> its tables, in the order :func:`run` returns them
TABLES: dict[str, tuple[str, ...]] = {
    "heads": ("heads",),
    "quadrants": ("quadrants",),
    "divergence": ("divergence", "divergence_summary"),
    "encoder": ("encoder", "encoder_divergence", "encoder_divergence_summary"),
    "rollout": ("rollout",),
}

#: analysis -> the keys of :func:`vlmattn.contrasts.options.contrast_options` it reads
OPTION_KEYS: dict[str, tuple[str, ...]] = {
    "heads": ("roi", "maps", "statistics"),
    "quadrants": ("maps", "head_pooling", "statistics"),
    "divergence": ("maps", "head_pooling", "divergence", "statistics"),
    "encoder": ("roi", "encoder", "divergence", "statistics"),
    "rollout": ("roi", "maps", "rollout", "statistics"),
}


def analysis_options(options: dict, analysis: str) -> dict:
    """The part of a contrast's ``options`` (:func:`vlmattn.contrasts.options.contrast_options`) ``analysis`` reads."""
    if analysis not in OPTION_KEYS:
        raise ValueError(f"unknown contrast analysis {analysis!r} (known: {', '.join(OPTION_KEYS)})")
    return {k: options[k] for k in OPTION_KEYS[analysis]}


def _reader(files: Sequence[str]) -> Callable[[], Iterator]:
    def samples():
        for f in files:
            yield read_sample(f)

    return samples


def run(analysis: str, files_a: Sequence[str], files_b: Sequence[str], options: dict) -> dict[str, pd.DataFrame]:
    """The tables ``TABLES[analysis]`` of the pairs ``zip(files_a, files_b)`` with ``options``
    (:func:`analysis_options`): module ``analysis`` of this package's ``analyse(a, b, options, first)``,
    loaded by name (so a job's code is its own analysis module), with ``a``, ``b`` callables giving
    fresh iterators over the samples and ``first`` the first A sample; each table as its library
    function returns it."""
    if analysis not in TABLES:
        raise ValueError(f"unknown contrast analysis {analysis!r} (known: {', '.join(TABLES)})")
    module = importlib.import_module(f"{__package__}.{analysis}")
    return module.analyse(_reader(files_a), _reader(files_b), options, read_sample(files_a[0]))


