"""Shared views of a sample's attention over its vision tokens, and head/step pooling.

Notation: T decode steps, L layers, H heads, V vision tokens. ``a[t, l, h, v]`` is the raw attention
of decode row t on vision token v; ``share = Σ_v a`` is the raw share of the row landing on vision
tokens; ``p = a / share`` (renormalised, the default) or ``p = a`` (raw).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..store import AttentionSample

HEAD_POOLS = ("mean", "max")
STEP_POOLS = ("last", "mean")


def vision_attention(sample: AttentionSample, renormalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(p [T, L, H, V], share [T, L, H])`` from the decode rows (float64)."""
    raw = sample.decode[..., sample.vision_index].astype(np.float64)
    share = raw.sum(-1)
    if not renormalize:
        return raw, share
    return raw / np.where(share > 0, share, 1.0)[..., None], share


def pool_steps(x: np.ndarray, how: str) -> np.ndarray:
    """Pool axis 0 (steps): ``last`` → x[T-1]; ``mean`` → mean over t."""
    if how == "last":
        return x[-1]
    if how == "mean":
        return x.mean(0)
    raise ValueError(f"unknown step pooling {how!r} (known: {STEP_POOLS})")


def pool_heads(p: np.ndarray, how: str, renormalize: bool = True) -> np.ndarray:
    """Pool the head axis (-2) of ``p [..., H, V]`` → ``[..., V]``.

    ``mean``: mean over heads; ``max``: element-wise max over heads, renormalised to sum 1 when
    ``renormalize`` (a mean of distributions is already one).
    """
    if how == "mean":
        return p.mean(-2)
    if how == "max":
        m = p.max(-2)
        if renormalize:
            s = m.sum(-1, keepdims=True)
            m = m / np.where(s > 0, s, 1.0)
        return m
    raise ValueError(f"unknown head pooling {how!r} (known: {HEAD_POOLS})")


def pool_share(share: np.ndarray, how: str) -> np.ndarray:
    """Pool the head axis (-1) of per-head vision shares with the same operator as the maps."""
    return share.mean(-1) if how == "mean" else share.max(-1)


@dataclass
class View:
    """One pooled slice: ``p [L, K, V]`` for K head labels, with matching ``share [L, K]``."""

    step_pool: str
    heads: list[str]
    p: np.ndarray
    share: np.ndarray


def views(sample: AttentionSample, cfg: dict) -> Iterator[View]:
    """Per step pooling in ``cfg['step_pooling']``: every head, then each head pooling in ``cfg['head_pooling']``."""
    renorm = cfg.get("renormalize", True)
    p, share = vision_attention(sample, renorm)
    for sp in cfg.get("step_pooling", STEP_POOLS):
        ps, ss = pool_steps(p, sp), pool_steps(share, sp)  # [L, H, V], [L, H]
        heads = [str(h) for h in range(ps.shape[1])]
        maps, shares = [ps], [ss]
        for hp in cfg.get("head_pooling", HEAD_POOLS):
            maps.append(pool_heads(ps, hp, renorm)[:, None, :])
            shares.append(pool_share(ss, hp)[:, None])
            heads.append(hp)
        yield View(sp, heads, np.concatenate(maps, axis=1), np.concatenate(shares, axis=1))
