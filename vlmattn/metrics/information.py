"""Mutual information between the vision token attended to and the token being generated.

For one (layer, head), stack the maps of the T decode steps into ``A [T, V]`` (row t: attention of the
query predicting generated token t on vision token v; renormalised per row unless ``renormalize:
false``). Read it as a joint distribution of Y (the generated token) and X (the vision token):

    P(y, x) = A[y, x] / Σ A,   P(y) = Σ_x P(y, x),   P(x) = Σ_y P(y, x)
    MI = Σ_{y,x} P(y, x) log[P(y, x) / (P(y) P(x))]   (nats, 0·log 0 = 0)

MI = 0 when every step attends with the same profile (A = outer product) and reaches log T when
each step attends to vision tokens no other step attends to; MI ≤ min(H(X), H(Y)). Within a region R
the columns are restricted to R's tokens and renormalised (``mass`` = Σ A over R / Σ A). Columns:
``mi``, ``mi_norm`` = MI / log T (NaN for T = 1), ``h_tokens`` H(X), ``h_steps`` H(Y), ``mass``.
All steps enter, so there is no step pooling option (``step_pool = all``). Steps whose map is undefined
(NaN, see :mod:`.common`) are left out of A (T counts the defined steps); with none, every column is NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import regions, step_views
from .concentration import entropy

COLUMNS = ["region", "region_kind", "mi", "mi_norm", "h_tokens", "h_steps", "mass"]
PLOTS = ["information_layer_head", "information_regions"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["step_pool", "sinks", "layer", "head", "region", "region_kind"]


def mutual_information(joint: np.ndarray) -> np.ndarray:
    """MI (nats) of joints ``[..., T, V]`` (any non-negative weights; normalised here). Zero-mass → NaN."""
    total = joint.sum((-2, -1), keepdims=True)
    p = joint / np.where(total > 0, total, 1.0)
    py = p.sum(-1, keepdims=True)
    px = p.sum(-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / (py * px)), 0.0)
    mi = np.clip(terms.sum((-2, -1)), 0.0, None)
    return np.where(total[..., 0, 0] > 0, mi, np.nan)


def compute(sample, cfg: dict) -> pd.DataFrame:
    """Rows ``step_pool = all, sinks, layer, head`` × region, with :data:`COLUMNS`.

    Every region's MI comes from sums over the whole stack computed once: with ``j`` the joint of R
    and J = Σ j, MI = H(X) + H(Y) − H(X, Y) and H(X, Y) = Σ entr(j) / J + log J, where Σ_t entr(j) per
    token, the column sums (X) and the row sums over each region (Y, one matrix product) are shared."""
    from scipy.special import entr

    regs = regions(sample, cfg)
    masks = np.array([r.mask for r in regs], np.float64)  # [R, V]
    frames = []
    for s in step_views(sample, cfg):
        _, n_layers, n_heads, _ = s.p.shape
        nan = np.isnan(s.p)
        n_steps = (~nan.any(-1)).sum(0)  # [L, K] defined steps
        log_t = np.log(np.where(n_steps > 1, n_steps, np.nan))
        z = np.where(nan, 0.0, s.p)  # [T, L, K, V], undefined steps left out
        del nan
        cols = z.sum(0)  # [L, K, V]: Σ_t of the joint
        plogp = entr(z).sum(0)  # [L, K, V]: Σ_t entr
        rows = np.moveaxis(z @ masks.T, 0, -2)  # [L, K, T, R]: each step's mass in each region
        del z
        total = cols.sum(-1)
        for i, r in enumerate(regs):
            cx = cols[..., r.mask]
            jt = cx.sum(-1)
            ok = jt > 0
            safe = np.where(ok, jt, 1.0)
            h_tokens = np.where(ok, entropy(cx / safe[..., None]), np.nan)
            h_steps = np.where(ok, entropy(rows[..., i] / safe[..., None]), np.nan)
            h_joint = plogp[..., r.mask].sum(-1) / safe + np.log(safe)
            mi = np.where(ok, np.clip(h_tokens + h_steps - h_joint, 0.0, None), np.nan)
            frames.append(
                pd.DataFrame(
                    {
                        "step_pool": "all",
                        "sinks": s.sinks,
                        "layer": np.repeat(np.arange(n_layers), n_heads),
                        "head": np.tile(s.heads, n_layers),
                        "region": r.name,
                        "region_kind": r.kind,
                        "mi": mi.ravel(),
                        "mi_norm": (mi / log_t).ravel(),
                        "h_tokens": h_tokens.ravel(),
                        "h_steps": h_steps.ravel(),
                        "mass": (jt / np.where(total > 0, total, np.nan)).ravel(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path) -> None:
    """``information_layer_head.png``: MI over the whole image per layer × head (mean over samples);
    ``information_regions.png``: MI of the pooled heads per layer in each quadrant / ROI / the image
    (``table``: the summary's means, :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    whole = table[table["region"] == "image"]
    plotting.layer_head_heatmap(whole, "mi", out_dir / "information_layer_head.png",
                                "Mutual information (nats) between generated token and vision token")
    d = table[table["head"].isin(["mean", "max"]) & table["region_kind"].isin(["image", "quadrant", "roi"])]
    panels = list(d.groupby(["model", "head", "sinks"], sort=True))
    if not panels:
        plotting.empty_figure(out_dir / "information_regions.png", "no pooled-head rows")
        return
    fig, axes = plotting.grid_axes(len(panels))
    for ax, ((model, head, sinks), g) in zip(axes, panels, strict=False):
        m = pooled(g, ["layer", "region"], ["mi"])["mi"].unstack("region")
        for region in m.columns:
            ax.plot(m.index, m[region], "-o" if region == "image" else "--.", label=region)
        ax.set_xlabel("LLM layer")
        ax.set_ylabel("MI (nats)")
        ax.set_title(f"{model} · heads {head} · sinks {sinks}", fontsize=8)
        ax.legend(fontsize=6)
    plotting.save(fig, out_dir / "information_regions.png")
