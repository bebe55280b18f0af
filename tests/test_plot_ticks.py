"""Every metric plot (drawn from its summary, as the jobs draw it) labels layer, head, step, token and cluster
axes with whole numbers only."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from tests.synthetic_attention import make_sample, metric_cfg, plot_metric
from vlmattn.metrics import METRICS, compute_table
from vlmattn.plotting import is_countable

matplotlib.use("Agg")


def samples(n: int = 3):
    """``n`` samples of 5 layers × 3 heads × 3 steps on a 4 × 4 grid, one object each."""
    rng = np.random.default_rng(0)
    for i in range(n):
        vision = rng.dirichlet(np.full(16, 0.3), size=(3, 5, 3)) * 0.6
        yield f"img{i}", make_sample(vision, boxes=[[0, 0, 32, 32]], labels=["cat"], colours=["red"],
                                     rest={"text_before": np.full((3, 5, 3), 0.4)})


def tick_values(fig: Figure) -> list[tuple[str, list[str]]]:
    """The drawn tick labels of every axis whose label names a countable thing."""
    fig.canvas.draw()
    found = []
    for ax in fig.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if is_countable(label):
                lo, hi = sorted(axis.get_view_interval())
                found.append((label, [t.get_text() for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs(),
                                                                    strict=True) if lo <= v <= hi]))
    return found


@pytest.mark.parametrize("name", METRICS)
def test_countable_axes_have_integer_ticks(name, tmp_path, monkeypatch):
    cfg = metric_cfg(name)
    frames = [compute_table(name, s, cfg, {"model": "m", "image": image, "question": "q"}) for image, s in samples()]
    seen = []
    real = Figure.savefig

    def checked(fig, *args, **kwargs):
        seen.extend(tick_values(fig))
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", checked)
    plot_metric(name, frames, cfg, tmp_path)
    for label, ticks in seen:
        for t in ticks:
            if t:
                value = float(t.replace("\N{MINUS SIGN}", "-"))
                assert value == int(value), f"{name}: axis {label!r} has tick {t!r}"


@pytest.mark.parametrize(("label", "countable"), [
    ("LLM layer", True), ("layer (first head)", True), ("head", True), ("decode step", True), ("grid row", True),
    ("sink tokens", True), ("encoder layer", True), ("entropy over vision tokens (nats)", False),
    ("m\nheads mean, mean of layers", False), ("share of the attention row", False), ("x (image fraction)", False),
])
def test_which_axes_count(label, countable):
    assert is_countable(label) is countable
