"""Head clusters: group the (layer, head) pairs by the shape of their attention over the image.

Features: the step-pooled vision map of each single head, ``F [L·H, V]`` (pooled heads are not
clustered). With rows L2-normalised (F̂):

* cosine similarity S = F̂ F̂ᵀ ``[L·H, L·H]`` (drawn per sample, ``head_clusters_similarity``);
* KMeans on F̂ (scikit-learn; ``k`` clusters, capped at L·H; ``n_init`` and ``random_state`` fixed);
  clusters are renumbered by their first head in (layer, head) order;
* ``silhouette`` score of the labels with cosine distance (NaN unless 2 ≤ clusters ≤ L·H − 1).

The table carries two kinds of rows (``kind``):

* ``head``: one per (layer, head) — ``cluster`` and ``centroid_similarity`` (cosine between the
  head's map and its cluster's mean normalised map);
* ``cluster``: one per cluster × region (quadrants, ROIs, objects) — ``size`` (heads) and ``mass``
  (mean over the cluster's heads of Σ_{v∈R} pᵥ).

``k`` (the clusters used) and ``silhouette`` repeat on every row of a view. Heads whose map is
undefined (NaN, see :mod:`.common`) are not clustered: their ``cluster`` and
``centroid_similarity`` are NaN, and ``k`` is capped at the number of defined heads (0 without any).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from ..maps import defined, int_column, regions, views

COLUMNS = ["kind", "step_pool", "step", "sinks", "layer", "head", "cluster", "k", "silhouette", "centroid_similarity",
           "size", "region", "region_kind", "mass"]
PLOTS = ["head_clusters_coassignment", "head_clusters_silhouette"]
SAMPLE_PLOTS = ["head_clusters_similarity"]
#: the summary's key columns (besides model and question); every other numeric column is a quantity
SUMMARY_KEYS = ["kind", "step_pool", "step", "sinks", "layer", "head", "region", "region_kind"]
#: numeric columns that are not quantities to average (cluster ids are arbitrary per map)
SUMMARY_SKIP = ["cluster"]


def cosine_similarity(features: np.ndarray) -> np.ndarray:
    from sklearn.metrics.pairwise import cosine_similarity as cs

    return cs(features)


def cluster(features: np.ndarray, k: int, n_init: int, random_state: int) -> tuple[np.ndarray, int, float]:
    """``(labels [N], clusters used, silhouette)`` of KMeans on the L2-normalised rows of ``features [N, V]``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import normalize

    n = len(features)
    k = max(1, min(int(k), n))
    x = normalize(features)
    if k == 1:
        labels = np.zeros(n, np.int64)
    else:
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit_predict(x)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)  # old labels ordered by first appearance
    labels = np.argsort(order)[np.searchsorted(np.unique(labels), labels)]
    used = len(np.unique(labels))
    sil = float(silhouette_score(x, labels, metric="cosine")) if 2 <= used <= n - 1 else np.nan
    return labels.astype(np.int64), used, sil


def centroid_similarity(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import normalize

    x = normalize(features)
    out = np.zeros(len(x))
    for c in np.unique(labels):
        m = labels == c
        centre = x[m].mean(0)
        norm = np.linalg.norm(centre)
        out[m] = x[m] @ centre / norm if norm > 0 else 0.0
    return out


def compute(sample, cfg: dict) -> pd.DataFrame:
    """``head`` and ``cluster`` rows per step view (see the module docstring) with :data:`COLUMNS`."""
    cfg = {**cfg, "head_pooling": [], "per_head": True}
    regs = regions(sample, cfg, image=False)
    k, n_init, seed = cfg["k"], cfg["n_init"], cfg["random_state"]
    frames = []
    for v in views(sample, cfg):
        n_layers, n_heads, n = v.p.shape
        ok = defined(v.p).ravel()
        f = v.p.reshape(-1, n)[ok]
        labels, used, sil = cluster(f, k, n_init, seed) if ok.any() else (np.zeros(0, np.int64), 0, np.nan)
        similarity = np.full(len(ok), np.nan)
        similarity[ok] = centroid_similarity(f, labels)
        all_labels = np.zeros(len(ok), np.int64)
        all_labels[ok] = labels
        common = {"step_pool": v.step_pool, "step": v.step, "sinks": v.sinks, "k": used, "silhouette": sil}
        frames.append(pd.DataFrame({"kind": "head", **common, "layer": np.repeat(np.arange(n_layers), n_heads),
                                    "head": np.tile(v.heads, n_layers), "cluster": int_column(all_labels, ok),
                                    "centroid_similarity": similarity}))
        rows = []
        for c in range(used):
            m = labels == c
            for r in regs:
                rows.append({"kind": "cluster", **common, "cluster": c, "size": int(m.sum()), "region": r.name,
                             "region_kind": r.kind, "mass": float((f[m][:, r.mask]).sum(1).mean())})
        frames.append(pd.DataFrame(rows))
    df = pd.concat([f for f in frames if len(f)], ignore_index=True).reindex(columns=COLUMNS)
    for col in ("step", "layer", "size", "cluster"):
        df[col] = df[col].astype("Int64")
    return df[COLUMNS]


def _head_order(d: pd.DataFrame) -> pd.DataFrame:
    d = d.copy()
    d["head_id"] = d["head"].astype(float).astype(int)
    return d.sort_values(["layer", "head_id"])


def coassignment(files: list[str]) -> pd.DataFrame:
    """Per (model, step_pool, sinks) and pair of heads (a, b) over the shard files' ``head`` rows: ``n``,
    the maps (samples × steps) in which both heads are clustered, and ``share``, the fraction of those in
    which they fall in the same cluster. Streams over the files one at a time; per file and group,
    ``same = E Eᵀ`` with ``E [heads, maps · k]`` the one-hot cluster labels (``n = D Dᵀ``, ``D`` the
    clustered indicator). Heads in (layer, head) order, named ``"{layer}.{head}"``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    acc: dict[tuple, list] = {}
    cols = ["model", "image", "question", "kind", "step_pool", "step", "sinks", "layer", "head", "cluster"]
    for f in sorted(files):
        t = pq.read_table(f, columns=cols)
        if t.num_rows == 0:
            continue
        t = t.filter(pc.equal(t["kind"].cast("string"), "head"))
        d = t.to_pandas()
        for c in ("model", "image", "question", "step_pool", "sinks", "head"):
            d[c] = d[c].astype(str)
        d["head_id"] = d["head"].astype(int)
        for key, g in d.groupby(["model", "step_pool", "sinks"], sort=True, observed=True):
            names = g.drop_duplicates(["layer", "head_id"]).sort_values(["layer", "head_id"])
            order = {(la, h): i for i, (la, h) in enumerate(zip(names["layer"], names["head_id"], strict=True))}
            maps = g.groupby(["image", "question", "step"], sort=False, dropna=False).ngroup().to_numpy()
            head = np.array([order[(la, h)] for la, h in zip(g["layer"], g["head_id"], strict=True)])
            lab = g["cluster"].to_numpy(dtype=float, na_value=np.nan)
            ok = ~np.isnan(lab)
            n_maps, n_heads, n_lab = maps.max() + 1, len(order), int(np.nanmax(lab, initial=0)) + 1
            onehot = np.zeros((n_heads, n_maps * n_lab), np.float32)
            onehot[head[ok], maps[ok] * n_lab + lab[ok].astype(int)] = 1
            clustered = np.zeros((n_heads, n_maps), np.float32)
            clustered[head[ok], maps[ok]] = 1
            same, both = onehot @ onehot.T, clustered @ clustered.T
            label = [f"{la}.{h}" for la, h in zip(names["layer"], names["head_id"], strict=True)]
            if key in acc:
                if acc[key][0] != label:
                    raise ValueError(f"head_clusters: shard {f} has other heads for {key}")
                acc[key][1] += same
                acc[key][2] += both
            else:
                acc[key] = [label, same.astype(np.float64), both.astype(np.float64)]
    frames = []
    for (model, sp, sinks), (label, same, both) in sorted(acc.items()):
        k = len(label)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(both > 0, same / both, np.nan)
        frames.append(pd.DataFrame({"model": model, "step_pool": sp, "sinks": sinks,
                                    "head_a": np.repeat(label, k), "head_b": np.tile(label, k),
                                    "n": both.ravel().astype(np.int64), "share": share.ravel()}))
    columns = ["model", "step_pool", "sinks", "head_a", "head_b", "n", "share"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


#: summaries beside the per-key one: name → function of the shard files (``{metric}_{name}.parquet``)
SUMMARY_EXTRAS = {"coassignment": coassignment}


def plot(table: pd.DataFrame, cfg: dict, out_dir: Path, coassignment: pd.DataFrame | None = None) -> None:
    """``head_clusters_coassignment.png``: fraction of samples in which two heads share a cluster
    (heads in layer order; :func:`coassignment`); ``head_clusters_silhouette.png``: mean silhouette score
    and number of clusters per model, step pooling and sinks (``table``: the summary's means,
    :func:`vlmattn.summaries.means`)."""
    from ..summaries import pooled

    co = coassignment if coassignment is not None else pd.DataFrame(columns=["model", "step_pool", "sinks"])
    grid = plotting.facet_grid(co, out_dir / "head_clusters_coassignment.png", "no head rows", size=(4.2, 3.8))
    if grid is not None:
        fig, cells = grid
        for ax, name, g in cells:
            label = list(dict.fromkeys(g["head_a"]))
            k = len(label)
            mat = g["share"].to_numpy(float).reshape(k, k)
            im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            layers = [int(s.split(".")[0]) for s in label]
            starts = [i for i, s in enumerate(label) if s.endswith(".0")]
            ax.set_xticks(starts, [layers[i] for i in starts])
            ax.set_yticks(starts, [layers[i] for i in starts])
            ax.set_xlabel("layer (first head)")
            ax.set_title(f"{name} · {int(g['n'].max())} maps", fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.suptitle("Share of samples in which two heads fall in the same cluster")
        plotting.save(fig, out_dir / "head_clusters_coassignment.png")
    heads = table[table["kind"] == "head"]
    grid = plotting.facet_grid(heads, out_dir / "head_clusters_silhouette.png", "no head rows", size=(4.2, 3.4))
    if grid is None:
        return
    fig, cells = grid
    for ax, name, g in cells:
        m = pooled(g, ["question"], ["silhouette", "k"])
        ax.barh(np.arange(len(m)), m["silhouette"].to_numpy())
        ax.set_yticks(np.arange(len(m)), list(m.index), fontsize=6)
        ax.set_xlabel("silhouette (cosine), mean over samples")
        ax.set_title(f"{name} · k {', '.join(f'{v:.3g}' for v in m['k'])}", fontsize=8)
    plotting.save(fig, out_dir / "head_clusters_silhouette.png")


def plot_sample(sample, cfg: dict, out_dir: Path, image_path: str | None = None) -> None:
    """``head_clusters_similarity.png``: cosine similarity of the heads' maps, heads sorted by cluster
    (lines: cluster boundaries), one panel per step pooling of the config but ``each`` (the answer's
    step ``first`` when there is none other) × sink variant; heads with an undefined map are left out."""
    cfg = {**cfg, "head_pooling": [], "per_head": True, "step_pooling": [s for s in cfg["step_pooling"] if s != "each"]
           or ["first"]}
    vs = list(views(sample, cfg))
    fig, axes = plotting.grid_axes(len(vs), size=(4.4, 4.0))
    for ax, v in zip(axes, vs, strict=False):
        n_layers, n_heads, n = v.p.shape
        keep = np.flatnonzero(defined(v.p).ravel())
        f = v.p.reshape(-1, n)[keep]
        if len(f) == 0:
            ax.set_title(f"steps {v.step_pool} · sinks {v.sinks} · no head with a defined map", fontsize=8)
            continue
        labels, used, sil = cluster(f, cfg["k"], cfg["n_init"], cfg["random_state"])
        order = np.lexsort((np.arange(len(labels)), labels))
        im = ax.imshow(cosine_similarity(f)[np.ix_(order, order)], cmap="viridis", interpolation="nearest")
        for b in np.flatnonzero(np.diff(labels[order])) + 0.5:
            ax.axhline(b, color="white", lw=0.8)
            ax.axvline(b, color="white", lw=0.8)
        names = [f"L{i // n_heads}H{i % n_heads}" for i in keep[order]]
        if len(names) <= 64:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
            ax.set_yticks(range(len(names)), names, fontsize=5)
        ax.set_title(f"steps {v.step_pool} · sinks {v.sinks} · k {used} · silhouette {sil:.3f}", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    title = f"{sample.attrs.get('image_id', '')} · {sample.attrs.get('question', '')}"
    fig.suptitle(f"{title}: cosine similarity of heads")
    plotting.save(fig, Path(out_dir) / "head_clusters_similarity.png")
