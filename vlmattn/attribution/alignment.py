"""Cross-modal alignment: how close each vision token's hidden state is to the answer's, layer by layer,
and how such a map agrees with attention and with the ground-truth boxes.

With hidden states ``h [L + 1, M, D]`` (``h_l`` the input of decoder layer ``l``, ``h_L`` the output of the
last one), vision tokens at positions ``p_v`` and a reference position ``r`` (the answer token):

    c[l, v] = cos(h_l[p_v], h_l[r]) = h_l[p_v] · h_l[r] / (‖h_l[p_v]‖ ‖h_l[r]‖)          [L + 1, V]

and with a set of reference positions (the prompt's text tokens) their mean cosine. Agreement of any map
``m [V]`` with a reference map (attention) is Spearman's rank correlation (``scipy.stats.spearmanr``);
with the boxes (token mask ``b [V]``), the pointing game (is ``argmax m`` in ``b``) and the energy of its
positive part, ``Σ_v m⁺_v b_v / Σ_v m⁺_v``.
"""

from __future__ import annotations

import numpy as np

from ..maps import energy, pointing
from .modality_gap import unit_rows


def cosine_map(hidden: np.ndarray, vision_positions: np.ndarray, reference) -> np.ndarray:
    """``[L + 1, V]``: the cosine of every vision token's hidden state with that of position ``reference``
    (an int), or the mean cosine over the positions ``reference [P]``, per layer; ``hidden [L + 1, M, D]``."""
    h = unit_rows(hidden)
    v = h[:, np.asarray(vision_positions, np.int64)]  # [L+1, V, D]
    ref = np.atleast_1d(np.asarray(reference, np.int64))
    return np.einsum("lvd,lpd->lvp", v, h[:, ref]).mean(-1)


def spearman(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``maps [..., V]`` with the same row of ``reference [..., V]``
    (``scipy.stats.spearmanr``; NaN where either row is constant). Returns ``[...]``."""
    from scipy.stats import spearmanr

    a, b = np.asarray(maps, np.float64), np.asarray(reference, np.float64)
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    out = np.full(len(a2), np.nan)
    for i, (x, y) in enumerate(zip(a2, b2, strict=True)):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = spearmanr(x, y).statistic
    return out.reshape(a.shape[:-1])


def box_agreement(maps: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pointing, energy)`` of maps ``[..., V]`` against the token mask ``mask [V]`` (bool): whether each
    map's argmax lies in the mask (nullable integers) and the share of its positive part inside it."""
    m = np.asarray(maps, np.float64)
    return pointing(m, mask), energy(np.clip(m, 0, None), mask)
