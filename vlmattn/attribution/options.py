"""The ``attribution`` block → what each attribution job reads, the samples it covers, and the
block's checks. The keys are the config's names, except where a nested option moves into the flat
argument list of :func:`vlmattn.attribution.sample.attribute` and its block's name must come with it:
``ig_steps``, ``ig_baseline``, ``ig_batch`` are ``integrated_gradients.n_steps``, ``.baseline``,
``.batch`` (``pixel_steps`` and ``tokens_per_sample`` keep their names)."""

from __future__ import annotations

from ..config import Sample
from ..errors import ConfigError
from ..families import ONLINE_PRUNING


def _block(cfg: dict) -> dict:
    ac = cfg.get("attribution")
    if not ac:
        raise ConfigError("config attribution: no attribution block")
    return ac


def attribute_options(cfg: dict) -> dict:
    """What an ``attribute`` job reads: ``maps`` (:func:`vlmattn.attribution.sample.attribute`'s
    ``attention_layers``, ``ig_steps``, ``ig_baseline``, ``pixel_steps``, ``ig_batch``,
    ``tokens_per_sample``), ``seed``, ``folds`` and ``fractions``. Raises ConfigError without the block."""
    ac = _block(cfg)
    ig, mg, fa = ac["integrated_gradients"], ac["modality_gap"], ac["faithfulness"]
    return {"maps": {"attention_layers": ac["attention_layers"], "ig_steps": ig["n_steps"],
                     "ig_baseline": ig["baseline"], "pixel_steps": ig["pixel_steps"], "ig_batch": ig["batch"],
                     "tokens_per_sample": mg["tokens_per_sample"]},
            "seed": cfg["seed"], "folds": mg["folds"], "fractions": list(fa["fractions"])}


def table_options(cfg: dict) -> dict:
    """What the tables job reads: ``statistics`` (``n_resamples``, ``confidence`` of
    ``attribution.faithfulness``) and ``seed``."""
    fa = _block(cfg)["faithfulness"]
    return {"statistics": {"n_resamples": fa["n_resamples"], "confidence": fa["confidence"]}, "seed": cfg["seed"]}


def plot_options(cfg: dict) -> dict:
    """What a figure job reads: ``overlays`` (samples drawn)."""
    return {"overlays": _block(cfg)["overlays"]}


def attribution_samples(cfg: dict, samples: list[Sample]) -> list[Sample]:
    """The samples the attribution block covers: its models' samples of its questions (all with null)."""
    ac = cfg["attribution"]
    qs = ac["questions"]
    return [s for s in samples if s.model in ac["models"] and (qs is None or s.question in qs)]


def check(cfg: dict) -> None:
    """The attribution block's models exist and are of a family the pruning harness runs (the faithfulness curves drop
    tokens through the pruning harness), and its questions exist."""
    ac = cfg.get("attribution")
    if not ac:
        return
    for m in ac["models"]:
        if m not in cfg["models"]:
            raise ConfigError(f"config attribution.models: unknown model {m!r}")
        if cfg["models"][m]["family"] not in ONLINE_PRUNING:
            raise ConfigError(f"config attribution.models: model {m!r} is of family {cfg['models'][m]['family']!r}; "
                              "the faithfulness curves drop tokens through the pruning harness, which runs the "
                              f"families {', '.join(ONLINE_PRUNING)}")
    for q in ac["questions"] or []:
        if q not in cfg["questions"]:
            raise ConfigError(f"config attribution.questions: unknown question {q!r}")
