"""Contrasts of the vision encoder's attention, per encoder layer: ROI mass and divergences of A and B.

Notation: L_enc encoder layers, H encoder heads, P patches (all images of the sample, row-major per
image; ``/vision_encoder`` of :mod:`vlmattn.store`, computed by :mod:`vlmattn.engine.vision`). The source
``x [L_enc, H, P]`` is

* ``received``: ``received[l, h, p] = (1/T) Σ_i A_l[h, i, p]``, the attention patch p receives;
* ``cls``: ``cls_attention[l, h, p] = A_l[h, cls, p]``, the CLS row (CLIP towers only).

**Maps.** Each head's row is normalised over the patches, ``q[l, h, p] = x[l, h, p] / Σ_p' x[l, h, p']``
(NaN where the row sums to 0: undefined), the heads are pooled (``head_pooling``: nan-aware ``mean`` or
element-wise ``max``, :func:`vlmattn.maps.pool_heads`) and each layer is renormalised:

    m[l, p] = pool_h q[l, h, p] / Σ_p' pool_h q[l, h, p']            (Σ_p m[l, p] = 1)

**ROI mass.** With ``R`` the patches whose centre lies in the ROI box (image fractions, half-open; an
ROI holding no patch centre falls back to the patch whose box contains the ROI centre —
:func:`vlmattn.maps.centre_mask`, the rule of :func:`~vlmattn.maps.box_mask`),

    r[l] = Σ_{p ∈ R} m[l, p]            (∈ [0, 1])

and :func:`encoder_contrast` tabulates the paired difference ``r_a[i, l] − r_b[i, l]`` over the pairs
i with :func:`vlmattn.contrasts.stats.contrast_table` (bootstrap interval, sign-flip p,
Benjamini–Hochberg over the L_enc layers, d_z, rank 1 = largest A − B).

**Divergences.** :func:`encoder_divergence` compares ``m_a[l]`` with ``m_b[l]`` per layer and the
layer-mean maps (``all``: nan-aware mean over layers, renormalised) with
:func:`vlmattn.contrasts.divergence.pair_divergence` (KL both ways and JS after ε-smoothing, in nats;
Hausdorff distances of the top ``top_fraction`` patch sets, in patches of the patch grid).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from ..maps import box_coords, centre_mask, pool_heads, pool_maps
from ..store import AttentionSample, VisionEncoderAttention
from .divergence import COLUMNS as DIVERGENCE_COLUMNS
from .divergence import pair_frame, within_condition
from .pairs import pair_roi, paired, roi_box
from .stats import COLUMNS as STATS_COLUMNS
from .stats import contrast_table

SOURCES = ("received", "cls")
COLUMNS = ["layer"] + [c for c in STATS_COLUMNS if c not in ("layer", "head")]


def encoder_of(sample: AttentionSample) -> VisionEncoderAttention:
    """The sample's ``/vision_encoder`` summaries; ValueError when it has none."""
    if sample.vision_encoder is None:
        name = sample.attrs.get("image_id", "sample")
        raise ValueError(f"{name} has no vision-encoder attention (/vision_encoder); "
                         f"capture with vision_encoder enabled")
    return sample.vision_encoder


def encoder_maps(sample: AttentionSample, *, source: str, head_pooling: str) -> np.ndarray:
    """``m [L_enc, P]`` (float64): per encoder layer the head-pooled distribution over patches (module
    docstring), each layer summing to 1; NaN for a layer without a defined head.

    ``source``: ``received`` or ``cls`` (ValueError when the encoder has no CLS token);
    ``head_pooling``: ``mean`` or ``max``."""
    ve = encoder_of(sample)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    if source == "cls":
        if not ve.has_cls or ve.cls_attention.shape[-1] == 0:
            raise ValueError(f"{sample.attrs.get('image_id', 'sample')}: source 'cls' needs a vision encoder "
                             f"with a CLS token; this one has none (use source 'received')")
        x = ve.cls_attention
    else:
        x = ve.received
    x = np.asarray(x, np.float64)
    total = x.sum(-1, keepdims=True)
    q = np.where(total > 0, x / np.where(total > 0, total, 1.0), np.nan)
    return pool_heads(q, head_pooling, True)


def encoder_layer_maps(sample: AttentionSample, *, source: str, head_pooling: str) -> np.ndarray:
    """``[L_enc + 1, P]``: :func:`encoder_maps`, then (last row) their nan-aware mean, renormalised."""
    m = encoder_maps(sample, source=source, head_pooling=head_pooling)
    return np.concatenate([m, pool_maps(m, "mean", 0, True)[None]])


def patch_roi_mask(sample: AttentionSample, roi) -> np.ndarray:
    """``[P]`` (bool): patches whose centre lies in ``roi`` (quadrant name or box ``[x0, y0, x1, y1]`` in
    image fractions, :func:`maps.roi_box`); half-open, with the empty-ROI fallback of
    :func:`vlmattn.maps.box_mask` (:func:`~vlmattn.maps.centre_mask`)."""
    return centre_mask(encoder_of(sample).patch_boxes, sample.image_size, roi_box(roi))


def patch_coords(sample: AttentionSample) -> np.ndarray:
    """``[P, 2]`` (row, column) of each patch in its image's patch grid (one image only); an image the
    encoder sees as several tiles gives each patch's centre in units of the smallest patch box
    (:func:`vlmattn.maps.box_coords`)."""
    ve = encoder_of(sample)
    grids = np.asarray(ve.patch_grid).reshape(-1, 2)
    if sample.n_images != 1:
        raise ValueError(f"patch coordinates need a single image per sample, got {sample.n_images}")
    if len(grids) > 1:
        return box_coords(ve.patch_boxes)
    rows, cols = (int(v) for v in grids[0])
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([r, c], axis=1).astype(np.float64)


def same_patches(a: AttentionSample, b: AttentionSample) -> None:
    """Raise ValueError unless ``a`` and ``b`` have encoder data with the same layers, heads and patch
    grid."""
    ea, eb = encoder_of(a), encoder_of(b)
    if ea.received.shape[:2] != eb.received.shape[:2]:
        raise ValueError(f"samples differ in encoder layers × heads: {ea.received.shape[:2]} vs "
                         f"{eb.received.shape[:2]}")
    if np.asarray(ea.patch_grid).tolist() != np.asarray(eb.patch_grid).tolist():
        raise ValueError(f"samples differ in patch grid: {np.asarray(ea.patch_grid).tolist()} vs "
                         f"{np.asarray(eb.patch_grid).tolist()}")


def encoder_pairs(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample]
                  ) -> Iterator[tuple[AttentionSample, AttentionSample]]:
    """:func:`maps.paired`, each pair also checked with :func:`same_patches`."""
    for sa, sb in paired(samples_a, samples_b):
        same_patches(sa, sb)
        yield sa, sb


def roi_masses(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], roi, *,
               source: str, head_pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """``(r_a [P_pairs, L_enc], r_b [P_pairs, L_enc])``: ROI mass ``Σ_{p ∈ R} m[l, p]`` of each pair's
    A and B sample (:func:`encoder_maps`, :func:`patch_roi_mask` of each sample); NaN where the map is
    undefined."""
    out_a, out_b = [], []
    for sa, sb in encoder_pairs(samples_a, samples_b):
        box = pair_roi(sa, sb, roi)
        for s, out in ((sa, out_a), (sb, out_b)):
            m = encoder_maps(s, source=source, head_pooling=head_pooling)
            out.append(m[:, patch_roi_mask(s, box)].sum(-1))
    return np.stack(out_a), np.stack(out_b)


def encoder_contrast(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], roi, *,
                     source: str, head_pooling: str, confidence: float, n_resamples: int, seed: int, alpha: float,
                     method: str, alternative: str = "two-sided") -> pd.DataFrame:
    """Contrast of the encoder's ROI mass, A − B, per encoder layer over the pairs
    ``zip(samples_a, samples_b)``.

    Parameters
    ----------
    samples_a, samples_b : iterables of AttentionSample with vision-encoder data, one per pair
    roi : quadrant name, box ``[x0, y0, x1, y1]`` in image fractions, or ``"object"`` (per pair,
        :func:`vlmattn.contrasts.pairs.pair_roi`)
    source, head_pooling
        Of the maps (:func:`encoder_maps`).
    confidence, n_resamples, seed, alpha, method, alternative
        Of :func:`vlmattn.contrasts.stats.contrast_table`.

    Returns
    -------
    pandas.DataFrame
        L_enc rows, columns :data:`COLUMNS`: ``layer`` (0 … L_enc−1) and the columns of
        :func:`stats.contrast_table` (``n_pairs``, ``mean_a``, ``mean_b``, ``diff``, ``ci_low``,
        ``ci_high``, ``p``, ``p_adj`` — BH over the L_enc layers —, ``effect_size``, ``significant``,
        ``rank``).
    """
    a, b = roi_masses(samples_a, samples_b, roi, source=source, head_pooling=head_pooling)
    table = contrast_table(a[..., None], b[..., None], confidence=confidence, n_resamples=n_resamples, seed=seed,
                           alpha=alpha, method=method, alternative=alternative)
    return table[COLUMNS].reset_index(drop=True)


def encoder_divergence(samples_a: Iterable[AttentionSample], samples_b: Iterable[AttentionSample], *,
                       source: str, head_pooling: str, epsilon: float, top_fraction: float) -> pd.DataFrame:
    """Per pair and encoder layer (``"0" … "L_enc−1"``, then ``"all"`` for the layer-mean maps):
    KL(A ‖ B), KL(B ‖ A), JS and the Hausdorff distances of the top ``top_fraction`` patch sets on the
    patch grid (:func:`vlmattn.contrasts.divergence.pair_divergence` of :func:`encoder_layer_maps`).
    Columns those of :func:`vlmattn.contrasts.divergence.divergence_table`."""
    frames = []
    for i, (sa, sb) in enumerate(encoder_pairs(samples_a, samples_b)):
        ma = encoder_layer_maps(sa, source=source, head_pooling=head_pooling)
        mb = encoder_layer_maps(sb, source=source, head_pooling=head_pooling)
        frames.append(pair_frame(i, ma, mb, patch_coords(sa), epsilon=epsilon, top_fraction=top_fraction))
    return pd.concat(frames, ignore_index=True)[DIVERGENCE_COLUMNS]


def encoder_within_condition(samples_b: Iterable[AttentionSample], *, source: str, head_pooling: str, epsilon: float,
                             top_fraction: float) -> pd.DataFrame:
    """:func:`vlmattn.contrasts.divergence.within_condition` of the B samples of
    :func:`encoder_divergence` (same arguments): the divergence between B_i and B_{(i+1) mod P} per
    encoder layer and ``all``; NaN for fewer than 3 samples."""
    return within_condition(((encoder_layer_maps(s, source=source, head_pooling=head_pooling), patch_coords(s))
                             for s in samples_b), epsilon=epsilon, top_fraction=top_fraction)


def analyse(a, b, options: dict, first) -> dict:
    """The ``encoder`` analysis of :mod:`.analyses`: per source (``cls`` only where the encoder has a
    CLS token), :func:`encoder_contrast`, :func:`encoder_divergence` and its summary."""
    from .summary import divergence_summary, summary_options

    o = options
    contrast, div, summ = [], [], []
    ve = encoder_of(first)
    for source in [s for s in o["encoder"]["sources"] if s != "cls" or ve.has_cls]:
        kw = dict(source=source, head_pooling=o["encoder"]["head_pooling"])
        contrast.append(encoder_contrast(a(), b(), o["roi"], **kw, **o["statistics"]).assign(source=source))
        d = encoder_divergence(a(), b(), **kw, **o["divergence"])
        null = encoder_within_condition(b(), **kw, **o["divergence"])
        div.append(d.assign(source=source))
        summ.append(divergence_summary(d, null=null, **summary_options(o["statistics"])).assign(source=source))
    names = ("encoder", "encoder_divergence", "encoder_divergence_summary")
    return {name: _source_first(pd.concat(frames, ignore_index=True))
            for name, frames in zip(names, (contrast, div, summ), strict=True)}


def _source_first(df: pd.DataFrame) -> pd.DataFrame:
    return df[["source", *[c for c in df.columns if c != "source"]]]
