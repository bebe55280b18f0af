"""Theoretical FLOPs of a decoder whose visual tokens are pruned inside the language model (FastV §4.2).

One transformer layer over n tokens with hidden size d and feed-forward size m costs (FastV Eq. 5)

    C(n) = 4·n·d² + 2·n²·d + 2·n·d·m

(q, k, v, o projections; attention scores and their weighted sum; the feed-forward block, counted as
two matrices). Pruning at layer K of T layers, from n to n̂ tokens, keeps the fraction

    F = [K·C(n) + (T − K)·C(n̂)] / [T·C(n)]

of the unpruned model's FLOPs. FastV's published figures reproduce with n = 36 + 576 = 612 (system
prompt and image, no question tokens) and n̂ = 36 + (1 − R)·576 for a pruning ratio R.
"""

from __future__ import annotations

import numpy as np


def layer_flops(n_tokens, *, hidden_size: int, ffn_size: int):
    """``C(n) = 4nd² + 2n²d + 2ndm`` for ``n_tokens`` n (scalar or array; need not be an integer)."""
    n = np.asarray(n_tokens, np.float64)
    if (n < 0).any():
        raise ValueError(f"n_tokens must be non-negative, got {n_tokens}")
    d, m = float(hidden_size), float(ffn_size)
    return 4 * n * d**2 + 2 * n**2 * d + 2 * n * d * m


def kept_fraction(n_tokens, n_kept, *, prune_layer: int, n_layers: int, hidden_size: int, ffn_size: int):
    """``[K·C(n) + (T − K)·C(n̂)] / [T·C(n)]`` with n = ``n_tokens``, n̂ = ``n_kept`` (scalars or arrays,
    broadcast), K = ``prune_layer`` (0 ≤ K ≤ T: K = 0 prunes before the first layer), T = ``n_layers``."""
    if not 0 <= prune_layer <= n_layers or n_layers < 1:
        raise ValueError(f"prune_layer must lie in 0 … n_layers ({n_layers}), got {prune_layer}")
    n, n_hat = np.asarray(n_tokens, np.float64), np.asarray(n_kept, np.float64)
    if (n_hat > n).any():
        raise ValueError(f"n_kept ({n_kept}) exceeds n_tokens ({n_tokens})")
    full = layer_flops(n, hidden_size=hidden_size, ffn_size=ffn_size)
    pruned = layer_flops(n_hat, hidden_size=hidden_size, ffn_size=ffn_size)
    return (prune_layer * full + (n_layers - prune_layer) * pruned) / (n_layers * full)


def vision_kept_fraction(ratio, *, n_text: int, n_vision: int, prune_layer: int, n_layers: int, hidden_size: int,
                         ffn_size: int):
    """:func:`kept_fraction` for dropping the fraction ``ratio`` R of ``n_vision`` vision tokens beside
    ``n_text`` other tokens: n = n_text + n_vision, n̂ = n_text + (1 − R)·n_vision."""
    r = np.asarray(ratio, np.float64)
    if ((r < 0) | (r > 1)).any():
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    return kept_fraction(n_text + n_vision, n_text + (1 - r) * n_vision, prune_layer=prune_layer, n_layers=n_layers,
                         hidden_size=hidden_size, ffn_size=ffn_size)
