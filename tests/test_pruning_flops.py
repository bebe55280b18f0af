"""FastV's FLOPs model (§4.2 Eq. 5) against the paper's LLaVA-1.5 figures and its limiting cases."""

import numpy as np
import pytest

from vlmattn.pruning.flops import kept_fraction, layer_flops, vision_kept_fraction

LLAVA_7B = dict(n_layers=32, hidden_size=4096, ffn_size=11008)
LLAVA_13B = dict(n_layers=40, hidden_size=5120, ffn_size=13824)


@pytest.mark.parametrize("k, ratio, expected", [(3, 0.5, 0.567), (2, 0.5, 0.552), (2, 0.75, 0.332)])
def test_llava_7b_published_fractions(k, ratio, expected):
    f = vision_kept_fraction(ratio, n_text=36, n_vision=576, prune_layer=k, **LLAVA_7B)
    assert round(float(f), 3) == expected
    n_hat = 36 + (1 - ratio) * 576
    assert f == pytest.approx(kept_fraction(612, n_hat, prune_layer=k, **LLAVA_7B))


def test_layer_flops_closed_form_and_13b_headline():
    d, m, n = 4096, 11008, 612
    assert layer_flops(n, hidden_size=d, ffn_size=m) == 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    assert layer_flops(n, hidden_size=d, ffn_size=m) / 1e9 == pytest.approx(99.3, abs=0.05)
    f = vision_kept_fraction(0.5, n_text=36, n_vision=576, prune_layer=2, **LLAVA_13B)
    assert round(float(f), 3) == 0.547  # the "45 % reduction" of the 13B model


def test_limits_and_broadcasting():
    c = lambda n: layer_flops(n, hidden_size=4096, ffn_size=11008)  # noqa: E731
    assert kept_fraction(612, 324, prune_layer=0, **LLAVA_7B) == pytest.approx(c(324) / c(612))
    assert kept_fraction(612, 324, prune_layer=32, **LLAVA_7B) == pytest.approx(1.0)
    assert kept_fraction(612, 612, prune_layer=2, **LLAVA_7B) == pytest.approx(1.0)
    f = vision_kept_fraction(np.array([0.5, 0.75]), n_text=36, n_vision=576, prune_layer=2, **LLAVA_7B)
    np.testing.assert_allclose(np.round(f, 3), [0.552, 0.332])
    with pytest.raises(ValueError, match="prune_layer"):
        kept_fraction(612, 324, prune_layer=33, **LLAVA_7B)
    with pytest.raises(ValueError, match="ratio"):
        vision_kept_fraction(1.5, n_text=36, n_vision=576, prune_layer=2, **LLAVA_7B)
