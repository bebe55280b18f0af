"""Rollout contrast: does a rollout map put more mass on a region of interest (ROI) in condition A than
in condition B, over P pairs, for each form of the map.

Forms (:mod:`vlmattn.rollout`, decode step ``step``, encoder ``source``), each a ``[V]`` map renormalised
over the vision tokens:

* ``seed``: layer- and head-mean attention of the answer row × encoder token importance
  (:func:`~vlmattn.rollout.seed_rollout_map`);
* ``llm``: the language-model rollout row (:func:`~vlmattn.rollout.llm_rollout_map`; needs
  ``extraction.llm_rollout``);
* ``llm_x_encoder``: the language-model rollout row × encoder token importance
  (:func:`~vlmattn.rollout.full_rollout_map`; needs ``extraction.llm_rollout``).

With the ROI's token mask ``R`` (:func:`vlmattn.maps.box_mask` of
:func:`vlmattn.contrasts.pairs.roi_box`), the ROI mass of a map is ``m = Σ_{v ∈ R} map[v]`` (NaN for an
undefined map, which leaves that pair out of the form's statistics). :func:`rollout_contrast` tabulates
``d[i, f] = m_a[i, f] − m_b[i, f]`` with :func:`vlmattn.contrasts.stats.contrast_table` (bootstrap
interval, sign-flip p, Benjamini–Hochberg across the forms, d_z, rank 1 = largest mean d).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..maps import box_mask, sample_answer_step
from ..rollout import full_rollout_map, llm_rollout_map, seed_rollout_map
from ..store import AttentionSample
from .pairs import pair_roi, paired, roi_box
from .stats import contrast_table

FORMS = ("seed", "llm", "llm_x_encoder")
COLUMNS = ["form", "n_pairs", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "p_exact", "p_adj", "effect_size",
           "significant", "rank"]


def rollout_map(sample: AttentionSample, form: str, *, step: int | None, source: str) -> np.ndarray:
    """``[V]``: the map of ``form`` (:data:`FORMS`) of decode step ``step`` with encoder ``source``;
    ``step=None`` is the sample's answer step t* (:func:`vlmattn.maps.sample_answer_step`)."""
    if step is None:
        step = sample_answer_step(sample)
    if form == "seed":
        return seed_rollout_map(sample, step, source)
    if form == "llm":
        return llm_rollout_map(sample, step)
    if form == "llm_x_encoder":
        return full_rollout_map(sample, step, source)
    raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")


def rollout_roi_mass(sample: AttentionSample, roi, *, step: int | None, source: str,
                     forms: Sequence[str] = FORMS) -> np.ndarray:
    """``m [F]``: ROI mass of each form's map (NaN where the map is undefined).

    Raises ValueError for a form the sample lacks the data of (``llm*`` without
    ``extraction.llm_rollout``: pass ``forms=("seed",)`` to contrast the seed form alone)."""
    mask = box_mask(sample, roi_box(roi))
    out = np.empty(len(forms))
    for i, form in enumerate(forms):
        if form != "seed" and sample.rollout_decode is None:
            raise ValueError(f"form {form!r} needs the language-model rollout, which the sample lacks; extract it "
                             "with extraction.llm_rollout: true, or contrast forms=('seed',) only")
        out[i] = rollout_map(sample, form, step=step, source=source)[mask].sum()
    return out


def rollout_contrast(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], roi, *,
                     step: int, source: str, confidence: float, n_resamples: int, seed: int, alpha: float,
                     method: str, alternative: str = "two-sided", forms: Sequence[str] = FORMS) -> pd.DataFrame:
    """Contrast of each rollout form's ROI mass, A − B, over the pairs ``zip(samples_a, samples_b)``.

    Parameters
    ----------
    samples_a, samples_b : iterables of AttentionSample, one per pair, in pair order (consumed pair by
        pair, :func:`vlmattn.contrasts.pairs.paired`)
    roi : quadrant name, box ``[x0, y0, x1, y1]`` in image fractions, or ``"object"`` (per pair,
        :func:`vlmattn.contrasts.pairs.pair_roi`)
    step : decode step of the maps (negative from the end; None: each sample's answer step t*, the row of
        the first generated token that carries text, :func:`vlmattn.maps.answer_step`)
    source : ``"cls"`` or ``"received"``, the encoder rollout row (:func:`vlmattn.rollout.encoder_token_importance`)
    confidence, n_resamples, seed, alpha, method, alternative
        Of :func:`vlmattn.contrasts.stats.contrast_table`.
    forms : subset of :data:`FORMS`, in the order of the rows

    Returns
    -------
    pandas.DataFrame
        One row per form, columns :data:`COLUMNS`: ``form``, then the columns of
        :func:`stats.contrast_table` (``mean_a``/``mean_b`` = mean ROI mass, ``diff`` with its bootstrap
        interval, sign-flip ``p``, ``p_adj`` BH across the forms, ``effect_size`` d_z, ``significant``,
        ``rank``).
    """
    forms = tuple(forms)
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms or len(set(forms)) != len(forms):
        raise ValueError(f"forms must be distinct names among {', '.join(FORMS)}; got {list(forms)!r}")
    out_a, out_b = [], []
    for sa, sb in paired(samples_a, samples_b):
        box = pair_roi(sa, sb, roi)
        out_a.append(rollout_roi_mass(sa, box, step=step, source=source, forms=forms))
        out_b.append(rollout_roi_mass(sb, box, step=step, source=source, forms=forms))
    a, b = np.stack(out_a)[:, None, :], np.stack(out_b)[:, None, :]  # [P, 1, F]: one "layer", forms as cells
    table = contrast_table(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed, alpha=alpha,
                           method=method, alternative=alternative, heads=list(forms))
    return table.rename(columns={"head": "form"})[COLUMNS].reset_index(drop=True)


def step_of(step_pooling: str) -> int | None:
    """Decode step of a rollout map: ``first`` → None (each sample's answer step t*), ``last`` → −1."""
    if step_pooling == "mean":
        raise ValueError("the rollout contrast takes one decode step: step_pooling first or last, not mean")
    return None if step_pooling == "first" else -1


def analyse(a, b, options: dict, first) -> dict:
    """The ``rollout`` analysis of :mod:`.analyses`: :func:`rollout_contrast` of the ``seed`` form, and
    of the ``llm`` forms when the cache holds the language-model rollout."""
    o = options
    forms = FORMS if first.rollout_decode is not None else ("seed",)
    return {"rollout": rollout_contrast(a(), b(), o["roi"], step=step_of(o["maps"]["step_pooling"]),
                                        source=o["rollout"]["source"], forms=forms, **o["statistics"])}
