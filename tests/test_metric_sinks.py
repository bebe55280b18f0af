"""sinks: per-token sink table against the rule's closed form."""

import numpy as np
import pytest

from tests.synthetic_attention import make_sample, metric_cfg
from vlmattn.metrics.sinks import compute


def test_sink_table():
    n = 16
    p = np.full((2, 2, 4, n), 1 / n)
    s7 = np.full(n, 0.4 / (n - 1))
    s7[7] = 0.6
    p[:, :, :3] = s7  # token 7: 0.6 = 9.6/V in 3 of 4 heads of every layer
    df = compute(make_sample(p * 0.7), metric_cfg("sinks", ratio=5, min_fraction=0.5)).set_index("token")
    assert df["is_sink"].tolist() == [t == 7 for t in range(n)]
    assert df.loc[7, "fraction"] == pytest.approx(0.75)
    assert df.loc[7, "mean_ratio"] == pytest.approx(n * (3 * 0.6 + 1 / n) / 4)
    assert df.loc[7, "max_ratio"] == pytest.approx(n * 0.6)
    assert (df.loc[7, "row"], df.loc[7, "col"], df.loc[7, "position"]) == (1, 3, 3 + 7)
    assert (df.loc[7, "x"], df.loc[7, "y"]) == pytest.approx((7 / 8, 3 / 8))
    assert not compute(make_sample(p), metric_cfg("sinks", ratio=5, min_fraction=0.8))["is_sink"].any()
    assert not compute(make_sample(p), metric_cfg("sinks", ratio=10, min_fraction=0.5))["is_sink"].any()
