"""The ``contrasts`` block → each contrast's sample pairs and the keyword arguments of its analyses,
and the block's checks."""

from __future__ import annotations

from ..config import Sample, corner_pairs, expected_answers, image_ids, metric_defaults, samples
from ..errors import ConfigError
from ..maps import SINK_RULE_KEYS


def contrast_questions(cc: dict) -> list[str]:
    """The question ids of a contrast block (``question``: one id or a list)."""
    q = cc["question"]
    return [q] if isinstance(q, str) else list(q)


def contrast_image_pairs(cfg: dict, name: str) -> list[tuple[str, str]]:
    """Image-id pairs ``[(image_a, image_b), ...]`` of contrast ``name``: the corner pairs
    (:func:`vlmattn.config.corner_pairs`) for ``pairs: corner_pairs``, else the listed pairs."""
    pairs = cfg["contrasts"][name]["pairs"]
    if pairs == "corner_pairs":
        return corner_pairs(cfg)
    return [(a, b) for a, b in pairs]


def contrast_pairs(cfg: dict, name: str, model: str | None = None) -> list[tuple[Sample, Sample]]:
    """Sample pairs ``[(sample_a, sample_b), ...]`` of contrast ``name`` (``cfg['contrasts'][name]``):
    for each model (only ``model`` when given; else every model, model by model), each question of the
    block, each image pair of :func:`contrast_image_pairs`, the samples ``(model, image_a, question)``
    and ``(model, image_b, question)``. :func:`check` has made sure the pipeline extracts both."""
    if name not in cfg["contrasts"]:
        raise ConfigError(f"config contrasts.{name}: unknown contrast (known: {', '.join(cfg['contrasts']) or 'none'})")
    if model is not None and model not in cfg["models"]:
        raise ConfigError(f"config models.{model}: unknown model")
    models = [model] if model is not None else list(cfg["models"])
    questions = contrast_questions(cfg["contrasts"][name])
    images = contrast_image_pairs(cfg, name)
    return [(Sample(m, a, q), Sample(m, b, q)) for m in models for q in questions for a, b in images]


def contrast_options(cfg: dict, name: str) -> dict:
    """Keyword arguments of contrast ``name`` for :mod:`vlmattn.contrasts`: ``roi``; ``maps``
    (``step_pooling``, ``renormalize``, ``min_vision_share``, ``exclude_sinks``, ``sink_rule`` — the rule of
    ``metrics.sinks``, or its schema defaults, when sinks are excluded, else None); ``head_pooling``;
    ``statistics`` (:func:`vlmattn.contrasts.stats.contrast_table`'s options), ``divergence``
    (``epsilon``, ``top_fraction``), ``encoder`` (``sources``, ``head_pooling``), ``rollout`` (``source``) and
    ``causal`` (``enabled``, ``ks``, ``n_random``, ``mode``, ``seed``). E.g.
    ``head_contrast(a, b, o["roi"], **o["maps"], **o["statistics"])``."""
    if name not in cfg["contrasts"]:
        raise ConfigError(f"config contrasts.{name}: unknown contrast (known: {', '.join(cfg['contrasts']) or 'none'})")
    cc = cfg["contrasts"][name]
    rule = None
    if cc["exclude_sinks"]:
        sinks = cfg["metrics"]["sinks"] if "sinks" in cfg["metrics"] else metric_defaults("sinks")
        rule = {k: sinks[k] for k in SINK_RULE_KEYS}
    roi = cc["roi"] if isinstance(cc["roi"], str) else tuple(cc["roi"])
    return {"roi": roi,
            "maps": {"step_pooling": cc["step_pooling"], "renormalize": cc["renormalize"],
                     "min_vision_share": cc["min_vision_share"], "exclude_sinks": cc["exclude_sinks"],
                     "sink_rule": rule},
            "head_pooling": cc["head_pooling"], "statistics": dict(cc["statistics"]),
            "divergence": dict(cc["divergence"]),
            "encoder": {"sources": list(cc["encoder"]["sources"]), "head_pooling": cc["encoder"]["head_pooling"]},
            "rollout": dict(cc["rollout"]), "causal": dict(cc["causal"])}


def check(cfg: dict) -> None:
    """Each contrast: its questions exist, its pairs name the config's images (two different ones),
    there is at least one pair, a box ``roi`` has x0 < x1 and y0 < y1, every sample of every pair
    is one the pipeline extracts (the question is asked of both images, for every model) and, with the
    causal check on, every A image has an expected answer (the token whose log-probability it tracks)."""
    imgs = set(image_ids(cfg))
    extracted = set(samples(cfg))
    for name, cc in cfg["contrasts"].items():
        key = f"config contrasts.{name}"
        for q in contrast_questions(cc):
            if q not in cfg["questions"]:
                raise ConfigError(f"{key}.question: unknown question {q!r}")
        roi = cc["roi"]
        if not isinstance(roi, str) and not (roi[0] < roi[2] and roi[1] < roi[3]):
            raise ConfigError(f"{key}.roi: need x0 < x1 and y0 < y1, got {list(roi)}")
        if cc["pairs"] == "corner_pairs" and not corner_pairs(cfg):
            raise ConfigError(f"{key}.pairs: corner_pairs needs images.synthetic.corner_pairs > 0")
        if cc["pairs"] != "corner_pairs":
            for k, (a, b) in enumerate(cc["pairs"]):
                for i in (a, b):
                    if i not in imgs:
                        raise ConfigError(f"{key}.pairs[{k}]: unknown image {i!r}")
                if a == b:
                    raise ConfigError(f"{key}.pairs[{k}]: both images are {a!r}")
        expected = expected_answers(cfg)
        for sa, sb in contrast_pairs(cfg, name):
            if cc["causal"]["enabled"] and sa.image not in expected.get(sa.question, {}):
                raise ConfigError(f"{key}.causal: image {sa.image!r} of condition A has no expected answer to "
                                  f"question {sa.question!r} (questions.{sa.question}.expected); give one or set "
                                  "causal.enabled: false")
            for s in (sa, sb):
                if s not in extracted:
                    raise ConfigError(f"{key}: question {s.question!r} is not asked of image {s.image!r} "
                                      f"(model {s.model}); add the image to questions.{s.question}.images "
                                      "(or the sample to samples)")
