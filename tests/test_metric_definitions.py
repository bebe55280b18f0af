"""The readings the metric tables rest on, each pinned (README *Undefined maps*, :mod:`vlmattn.maps`):

* a pooled ``vision_share`` pools the raw shares of all heads, undefined ones included, while the
  pooled map pools the defined heads only;
* with sinks excluded, the figures that count tokens (normalised entropy, Gini, peak / mean,
  ``n_vision``) count the V − s kept tokens;
* an undefined map leaves the columns that describe the row's tokens or region filled and the
  columns computed from the map NaN;
* ``step_pooling: first`` is the row of the first generated token that carries text.
"""

import numpy as np
import pytest
from scipy import stats

from tests.synthetic_attention import make_sample, metric_cfg
from vlmattn.engine.inference import generated_token_fields
from vlmattn.maps import answer_step, carries_text
from vlmattn.metrics import get_metric
from vlmattn.models.toy import build_tokenizer

V = 16


def _two_heads(defined_share: float = 0.6, undefined_share: float = 0.0) -> np.ndarray:
    """``[T=1, L=1, H=2, V]``: head 0 a one-hot map at token 5 with ``defined_share`` on the image,
    head 1 uniform with ``undefined_share`` (below ``min_vision_share`` for the defaults)."""
    a = np.zeros((1, 1, 2, V))
    a[0, 0, 0, 5] = defined_share
    a[0, 0, 1] = undefined_share / V
    return a


def test_pooled_share_counts_every_head_and_the_pooled_map_only_the_defined_ones():
    s = make_sample(_two_heads(0.6, 1e-6))
    df = get_metric("concentration").compute(s, metric_cfg("concentration", step_pooling=["first"],
                                                              head_pooling=["mean", "max"], exclude_sinks=False))
    by = df.set_index("head")
    assert np.isnan(by.loc["1", "entropy"]) and by.loc["1", "vision_share"] == pytest.approx(1e-6)
    # the pooled map is head 0's one-hot map alone (a mean with head 1's uniform map would not be)
    assert by.loc["mean", "entropy"] == 0.0 and by.loc["mean", "peak_to_mean"] == pytest.approx(V)
    # the pooled share is the mean / max over both heads: the share of the head-mean row
    assert by.loc["mean", "vision_share"] == pytest.approx((0.6 + 1e-6) / 2)
    assert by.loc["max", "vision_share"] == pytest.approx(0.6)


def _sink_sample() -> tuple[np.ndarray, object]:
    """Every (layer, head) puts 0.5 on token 0 (a sink: 8× the uniform 1/V) and 0.5 spread evenly
    over the other V − 1 tokens, so the map over the kept tokens is uniform."""
    a = np.full((1, 2, 2, V), 0.5 / (V - 1))
    a[..., 0] = 0.5
    return a, make_sample(a)


def test_sinks_excluded_count_the_kept_tokens():
    _, s = _sink_sample()
    df = get_metric("concentration").compute(s, metric_cfg("concentration", exclude_sinks="both",
                                                              step_pooling=["first"], head_pooling=[]))
    ex = df[df["sinks"] == "excluded"]
    inc = df[df["sinks"] == "included"]
    assert (ex["n_vision"] == V - 1).all() and (inc["n_vision"] == V).all()
    # uniform over the V − 1 kept tokens: the closed forms of a uniform map over N = V − 1
    np.testing.assert_allclose(ex["norm_entropy"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(ex["gini"], 0.0, atol=1e-12)
    np.testing.assert_allclose(ex["peak_to_mean"], 1.0, rtol=1e-12)
    # with the sink: scipy's entropy of the whole map over log V
    p = np.r_[0.5, np.full(V - 1, 0.5 / (V - 1))]
    np.testing.assert_allclose(inc["norm_entropy"], stats.entropy(p) / np.log(V), rtol=1e-12)


def test_dynamics_sinks_excluded_count_the_kept_tokens():
    _, s = _sink_sample()
    df = get_metric("dynamics").compute(s, metric_cfg("dynamics", exclude_sinks=True, head_pooling=[]))
    np.testing.assert_allclose(df["norm_entropy"], 1.0, rtol=1e-12)


FILLED = {
    "concentration": ["n_vision"],
    "spatial": ["region", "region_kind", "n_tokens", "area_share"],
    "grounding": ["object", "label", "box_area", "n_box_tokens", "box_token_share"],
}
FROM_THE_MAP = {
    "concentration": ["entropy", "norm_entropy", "gini", "effective_span", "peak_to_mean"],
    "spatial": ["mass", "lift", "com_x", "com_y", "var_x", "var_y"],
    "grounding": ["iou", "pointing", "energy"],
}


@pytest.mark.parametrize("name", sorted(FILLED))
def test_an_undefined_map_keeps_what_describes_the_row(name):
    s = make_sample(_two_heads(0.6, 0.0), boxes=[[0, 0, 32, 32]], labels=["cat"])
    df = get_metric(name).compute(s, metric_cfg(name, step_pooling=["first"], head_pooling=[], exclude_sinks=False))
    undefined, defined = df[df["head"] == "1"], df[df["head"] == "0"]
    assert len(undefined) > 0
    for col in FILLED[name]:
        assert col in df and undefined[col].notna().all(), col
        # what describes the row does not depend on the map: the defined head's rows have the same
        assert undefined[col].tolist() == defined[col].tolist(), col
    for col in FROM_THE_MAP[name]:
        assert col in df and undefined[col].isna().all(), col
        assert defined[col].notna().any(), col
    if "vision_share" in df:  # the raw share of the row, filled whatever the map
        assert undefined["vision_share"].tolist() == [0.0] * len(undefined)


def test_answer_step_skips_a_leading_space_token():
    tok = build_tokenizer()
    space, digit = tok.convert_tokens_to_ids(["Ġ", "3"])
    fields = generated_token_fields(tok, np.array([space, digit, tok.eos_token_id]))
    assert fields["generated_tokens"][0] == " " and fields["generated_special"].tolist() == [False, False, True]
    assert carries_text(fields["generated_tokens"], fields["generated_special"]).tolist() == [False, True, False]
    assert answer_step(fields["generated_tokens"], fields["generated_special"]) == 1
    # a special token first (as Qwen's <|box_start|>): passed over too
    fields = generated_token_fields(tok, np.array([tok.bos_token_id, digit]))
    assert answer_step(fields["generated_tokens"], fields["generated_special"]) == 1
    # nothing carries text: row 0
    assert answer_step([" ", "."], None) == 0


def test_first_step_pooling_is_the_answer_row():
    """The rows of ``first`` are those of decode row 1 when the first generated token is a space."""
    rng = np.random.default_rng(3)
    a = rng.dirichlet(np.ones(V), size=(3, 2, 2)) * 0.5
    tok = build_tokenizer()
    space, digit = tok.convert_tokens_to_ids(["Ġ", "3"])
    fields = generated_token_fields(tok, np.array([space, digit, tok.eos_token_id]))
    s = make_sample(a, tokens=fields["generated_tokens"])
    s.generated_special = fields["generated_special"]
    cfg = metric_cfg("concentration", step_pooling=["first", "each"], head_pooling=[],
                     exclude_sinks=False)
    df = get_metric("concentration").compute(s, cfg)
    first = df[df["step_pool"] == "first"].reset_index(drop=True)
    row1 = df[(df["step_pool"] == "each") & (df["step"] == 1)].reset_index(drop=True)
    assert (first["step"] == 1).all()
    np.testing.assert_array_equal(first["entropy"], row1["entropy"])
    assert not np.allclose(first["entropy"], df[(df["step_pool"] == "each") & (df["step"] == 0)]["entropy"])


def test_the_contrasts_first_is_the_answer_row():
    from vlmattn.contrasts.pairs import pooled_maps

    a = np.random.default_rng(4).dirichlet(np.ones(V), size=(3, 2, 2)) * 0.5
    s = make_sample(a, tokens=[" ", "3", "</s>"])
    p = pooled_maps(s, step_pooling="first", renormalize=True, min_vision_share=0.0)
    np.testing.assert_allclose(p, a[1] / a[1].sum(-1, keepdims=True), rtol=1e-12)
