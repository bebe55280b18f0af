"""head_clusters: KMeans on the heads' maps with cosine silhouette; closed forms and guards."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tests.synthetic_attention import make_sample, metric_cfg
from vlmattn.metrics.head_clusters import cluster, compute, plot_sample

CFG = {"step_pooling": ["last"], "exclude_sinks": False, "regions": {}, "k": 2, "n_init": 4, "random_state": 0}


def config(**changes) -> dict:
    """The head_clusters block of CFG with ``changes``, schema defaults filled in."""
    return metric_cfg("head_clusters", **{**CFG, **changes})


def grouped_sample():
    """Heads of group A look at the top-left quadrant, group B at the bottom-right (disjoint supports)."""
    a = np.zeros(16)
    a[[0, 1, 4, 5]] = 0.25
    b = np.zeros(16)
    b[[10, 11, 14, 15]] = 0.25
    group = np.array([[0, 1, 0, 1], [1, 1, 0, 0]])  # [L, H]
    p = np.where(group[..., None] == 0, a, b)[None]
    return make_sample(p), group.ravel()


def test_two_groups_are_recovered_with_silhouette_one():
    s, group = grouped_sample()
    df = compute(s, config())
    heads = df[df["kind"] == "head"].sort_values(["layer", "head"])
    assert adjusted_rand_score(group, heads["cluster"]) == 1.0
    assert heads["cluster"].iloc[0] == 0  # clusters numbered by first head
    # identical maps within a group (cosine distance 0), disjoint between groups (distance 1)
    assert heads["silhouette"].iloc[0] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(heads["centroid_similarity"], 1.0, atol=1e-12)
    clusters = df[df["kind"] == "cluster"].set_index(["cluster", "region"])
    assert clusters.loc[(0, "top_left"), "mass"] == pytest.approx(1.0)
    assert clusters.loc[(0, "bottom_right"), "mass"] == pytest.approx(0.0)
    assert clusters.loc[(1, "bottom_right"), "mass"] == pytest.approx(1.0)
    assert clusters.xs("top_left", level="region")["size"].sum() == 8


def test_k_above_the_number_of_heads_is_capped():
    rng = np.random.default_rng(0)
    f = rng.dirichlet(np.ones(16), size=6)
    labels, used, sil = cluster(f, k=50, n_init=2, random_state=0)
    assert used == 6 and sorted(labels) == list(range(6)) and np.isnan(sil)
    labels, used, sil = cluster(f, k=1, n_init=10, random_state=0)
    assert used == 1 and np.isnan(sil) and set(labels) == {0}


def test_deterministic_and_figure(tmp_path):
    rng = np.random.default_rng(1)
    s = make_sample(rng.dirichlet(np.ones(16), size=(2, 3, 4)))
    cfg = config(k=3, step_pooling=["last", "mean"], exclude_sinks="both")
    a, b = compute(s, cfg), compute(s, cfg)
    assert a.equals(b)
    assert set(a["kind"]) == {"head", "cluster"} and set(a["sinks"]) == {"included", "excluded"}
    plot_sample(s, cfg, tmp_path)
    assert (tmp_path / "head_clusters_similarity.png").stat().st_size > 0
