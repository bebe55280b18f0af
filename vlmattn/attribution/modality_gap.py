"""The modality gap per decoder layer: how far apart the vision and the text tokens' hidden states lie.

With the hidden states of one layer L2-normalised, ``u = h / ‖h‖``, vision tokens ``u_1 … u_a`` and text
tokens ``w_1 … w_b``:

    centroid distance   g = ‖ (1/a) Σ u_i − (1/b) Σ w_j ‖          (0 … 2)

computed exactly across samples from per-sample sums (:func:`normalised_sums`, :func:`centroid_distance`),
and the linear separability: the accuracy of a logistic regression telling the two apart, by stratified
k-fold cross-validation (scikit-learn; 0.5 for classes of equal size that it cannot tell apart, 1 for
linearly separable ones).
"""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x [..., D]`` with every row scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def normalised_sums(hidden: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``Σ_{p ∈ positions} u_l[p]`` per layer: ``[L + 1, D]`` from ``hidden [L + 1, M, D]``."""
    return unit_rows(np.asarray(hidden)[:, np.asarray(positions, np.int64)]).sum(1)


def centroid_distance(vision_sum: np.ndarray, n_vision: int, text_sum: np.ndarray, n_text: int) -> np.ndarray:
    """``‖vision_sum / n_vision − text_sum / n_text‖`` over the last axis: ``[..., D]`` → ``[...]``."""
    return np.linalg.norm(np.asarray(vision_sum) / n_vision - np.asarray(text_sum) / n_text, axis=-1)


def separability(vision: np.ndarray, text: np.ndarray, *, folds: int, seed: int) -> tuple[float, float]:
    """``(mean, sd)`` over ``folds`` stratified shuffled folds (``random_state=seed``) of the accuracy of
    ``LogisticRegression(max_iter=1000)`` on the unit-normalised rows of ``vision [a, D]`` (class 1) and
    ``text [b, D]`` (class 0). Raises ValueError when a class has fewer than ``folds`` rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    if min(len(vision), len(text)) < folds:
        raise ValueError(f"{folds}-fold separability needs at least {folds} tokens of each modality, got "
                         f"{len(vision)} vision and {len(text)} text")
    x = unit_rows(np.concatenate([vision, text]))
    y = np.r_[np.ones(len(vision), np.int64), np.zeros(len(text), np.int64)]
    scores = cross_val_score(LogisticRegression(max_iter=1000), x, y,
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float(scores.mean()), float(scores.std())


def token_subsample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, size)`` distinct indices of ``0 … n − 1``, sorted, drawn by ``rng``."""
    return np.sort(rng.choice(n, size=min(n, size), replace=False))
