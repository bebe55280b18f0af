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
opened one at a time) and the slice of :func:`vlmattn.config.contrast_options` that
:func:`analysis_options` names, so editing one analysis's options reruns that analysis alone. The
causal check runs the model and is :mod:`.ablation`'s. The encoder analysis leaves the ``cls``
source out for an encoder without a CLS token (Qwen).
"""

from __future__ import annotations

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

#: analysis -> the keys of :func:`vlmattn.config.contrast_options` it reads
OPTION_KEYS: dict[str, tuple[str, ...]] = {
    "heads": ("roi", "maps", "statistics"),
    "quadrants": ("maps", "head_pool", "statistics"),
    "divergence": ("maps", "head_pool", "divergence", "statistics"),
    "encoder": ("roi", "encoder", "divergence", "statistics"),
    "rollout": ("roi", "maps", "rollout", "statistics"),
}


def analysis_options(options: dict, analysis: str) -> dict:
    """The part of a contrast's ``options`` (:func:`vlmattn.config.contrast_options`) ``analysis`` reads."""
    if analysis not in OPTION_KEYS:
        raise ValueError(f"unknown contrast analysis {analysis!r} (known: {', '.join(OPTION_KEYS)})")
    return {k: options[k] for k in OPTION_KEYS[analysis]}


def _reader(files: Sequence[str]) -> Callable[[], Iterator]:
    def samples():
        for f in files:
            yield read_sample(f)

    return samples


def _summary_options(statistics: dict) -> dict:
    """:func:`.summary.divergence_summary`'s options: the contrast's statistics, one-sided (A vs B above
    the within-condition reference)."""
    return {**{k: statistics[k] for k in ("confidence", "n_resamples", "seed", "method")}, "alternative": "greater"}


def _step(step_pool: str) -> int | None:
    """Decode step of a rollout map: ``first`` → None (each sample's answer step t*), ``last`` → −1."""
    if step_pool == "mean":
        raise ValueError("the rollout contrast takes one decode step: step_pooling first or last, not mean")
    return None if step_pool == "first" else -1


def run(analysis: str, files_a: Sequence[str], files_b: Sequence[str], options: dict) -> dict[str, pd.DataFrame]:
    """The tables ``TABLES[analysis]`` of the pairs ``zip(files_a, files_b)`` with ``options``
    (:func:`analysis_options`); each table as its library function returns it."""
    a, b = _reader(files_a), _reader(files_b)
    o = options
    if analysis == "heads":
        from . import heads

        return {"heads": heads.head_contrast(a(), b(), o["roi"], **o["maps"], **o["statistics"])}
    if analysis == "quadrants":
        from . import quadrants

        tables = [quadrants.quadrant_shift(a(), b(), **o["maps"], head_pool=o["head_pool"], per_layer=per_layer,
                                           **o["statistics"]) for per_layer in (False, True)]
        return {"quadrants": pd.concat(tables, ignore_index=True)}
    if analysis == "divergence":
        from . import divergence, summary

        kw = dict(**o["maps"], head_pool=o["head_pool"], **o["divergence"])
        table = divergence.divergence_table(a(), b(), **kw)
        null = divergence.within_condition_table(b(), **kw)
        return {"divergence": table,
                "divergence_summary": summary.divergence_summary(table, null=null,
                                                                 **_summary_options(o["statistics"]))}
    if analysis == "encoder":
        from . import encoder, summary

        contrast, div, summ = [], [], []
        ve = encoder.encoder_of(read_sample(files_a[0]))
        for source in [s for s in o["encoder"]["sources"] if s != "cls" or ve.has_cls]:
            kw = dict(source=source, head_pool=o["encoder"]["head_pool"])
            contrast.append(encoder.encoder_contrast(a(), b(), o["roi"], **kw, **o["statistics"])
                            .assign(source=source))
            d = encoder.encoder_divergence(a(), b(), **kw, **o["divergence"])
            null = encoder.encoder_within_condition(b(), **kw, **o["divergence"])
            div.append(d.assign(source=source))
            summ.append(summary.divergence_summary(d, null=null, **_summary_options(o["statistics"]))
                        .assign(source=source))
        return {name: _source_first(pd.concat(frames, ignore_index=True))
                for name, frames in zip(TABLES["encoder"], (contrast, div, summ), strict=True)}
    if analysis == "rollout":
        from . import rollout

        forms = rollout.FORMS if read_sample(files_a[0]).rollout_decode is not None else ("seed",)
        return {"rollout": rollout.rollout_contrast(a(), b(), o["roi"], step=_step(o["maps"]["step_pool"]),
                                                    source=o["rollout"]["source"], forms=forms, **o["statistics"])}
    raise ValueError(f"unknown contrast analysis {analysis!r} (known: {', '.join(TABLES)})")


def _source_first(df: pd.DataFrame) -> pd.DataFrame:
    return df[["source", *[c for c in df.columns if c != "source"]]]
