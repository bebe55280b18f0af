"""hotspots: peaks above a percentile grown into connected regions, against scipy.ndimage."""

import numpy as np
import pytest
from scipy import ndimage

from tests.synthetic_attention import make_sample, metric_cfg, tile
from vlmattn.metrics.hotspots import compute, find_hotspots

CFG = {"step_pooling": ["last"], "head_pooling": [], "exclude_sinks": False, "size": 3, "percentile": 90}


def config(**changes) -> dict:
    """The hotspots block of CFG with ``changes``, schema defaults filled in."""
    return metric_cfg("hotspots", **{**CFG, **changes})


def two_blobs(n=8):
    yy, xx = np.mgrid[0:n, 0:n]
    g = 3 * np.exp(-((yy - 1) ** 2 + (xx - 1) ** 2) / 0.8) + 2 * np.exp(-((yy - 5) ** 2 + (xx - 6) ** 2) / 0.8) + 0.01
    return g / g.sum()


def test_two_blobs_give_two_hotspots_with_scipy_centroids():
    g = two_blobs()
    s = make_sample(tile(g.ravel()))
    df = compute(s, config())
    assert df["n_hotspots"].tolist() == [2, 2]
    thr = np.percentile(g, 90)
    labels, n = ndimage.label(g >= thr)
    assert n == 2
    for _, r in df.iterrows():
        k = labels[np.unravel_index(np.argmin(abs(g - r["peak"])), g.shape)]
        cy, cx = ndimage.center_of_mass(g, labels, k)  # grid units → centres (i + ½)/n
        assert (r["x"], r["y"]) == pytest.approx(((cx + 0.5) / 8, (cy + 0.5) / 8), abs=1e-12)
        assert r["n_tokens"] == (labels == k).sum()
        assert r["area"] == pytest.approx((labels == k).sum() / 64)
        assert r["mass"] == pytest.approx(g[labels == k].sum(), abs=1e-12)
    strongest, second = df.iloc[0], df.iloc[1]
    assert strongest["peak"] == pytest.approx(g[1, 1]) and strongest["quadrant"] == "top_left"
    assert second["peak"] == pytest.approx(g[5, 6]) and second["quadrant"] == "bottom_right"


def test_flat_map_is_one_hotspot_covering_the_image():
    hs = find_hotspots(np.full(16, 1 / 16), make_sample(tile(np.full(16, 1 / 16))), 3, 90, 4)
    assert len(hs) == 1
    assert (hs[0]["area"], hs[0]["n_tokens"], hs[0]["x"], hs[0]["y"]) == pytest.approx((1.0, 16, 0.5, 0.5))


def test_neighbourhood_size_merges_close_peaks():
    p = np.full(25, 0.01)
    p[[6, 8]] = [0.4, 0.3]  # (1,1) and (1,3): two tokens apart on a 5 × 5 grid
    p[7] = 0.2  # a bridge: one connected region above the 90th percentile (tokens 6, 7, 8)
    s = make_sample(tile(p))
    hs = find_hotspots(p, s, size=3, percentile=90, connectivity=4)
    assert len(hs) == 1 and (hs[0]["n_tokens"], hs[0]["n_peaks"]) == (3, 2)
    assert find_hotspots(p, s, size=5, percentile=90, connectivity=4)[0]["n_peaks"] == 1
    # without the bridge (95th percentile: tokens 6 and 8) 4-connectivity splits them, and the
    # 5 × 5 window leaves the weaker one without a peak
    p[7] = 0.01
    assert [h["peak"] for h in find_hotspots(p, s, size=3, percentile=95, connectivity=4)] == [0.4, 0.3]
    assert [h["peak"] for h in find_hotspots(p, s, size=5, percentile=95, connectivity=4)] == [0.4]
