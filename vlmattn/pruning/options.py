"""The ``pruning`` block → the keyword arguments each pruning job reads (and nothing else), the one
check of ``prune_layer``, and the block's cross-checks.

Per job (schema defaults filled in):

* :func:`offline_options` — the offline scores of a shard: ``prune_layer``, ``scores``
  (:func:`vlmattn.pruning.offline.sample_scores`'s keyword arguments), ``budgets`` and ``step``;
* :func:`online_options` — an online chunk: ``prune_layer``, ``scores``, ``budgets`` and ``online``
  (``eval_set``, ``n_items``, ``seed``, ``chunks``, ``max_new_tokens``, ``modes``, ``positions``);
* :func:`train_options` — training one learned pruner: ``prune_layer``, ``spec`` (the variant's
  :class:`vlmattn.pruning.learned.PrunerSpec` keyword arguments) and ``train``
  (:class:`vlmattn.pruning.train_pruner.PrunerTraining`'s);
* :func:`learned_options` — the learned pruners' online chunk: ``prune_layer``, ``budgets`` and
  ``online`` (``eval_set``, ``n_items``, ``seed``, ``chunks``, ``max_new_tokens``, ``positions``);
* :func:`statistics_options` — the tables: ``confidence``, ``alpha`` and ``fractional`` (the evaluation
  set's scoring rule averages fractional scores, :data:`vlmattn.scoring.BINARY_RULES`).

``budgets`` is ``{"budgets", "keep_ratios", "convention"}`` (:func:`vlmattn.pruning.offline.model_budgets`).
The keys are the config's names, except where a nested option moves into a flat argument list and
its block's name must come with it: ``n_draws`` and ``seed`` are ``random.draws`` and ``random.seed``,
``convention`` is ``budget_convention``.
"""

from __future__ import annotations

from ..config import PREFILL_ROW_ORDER
from ..errors import ConfigError, InputError
from ..families import ONLINE_PRUNING
from .scorers import ROWS_NEEDED


def _block(cfg: dict) -> dict:
    pc = cfg.get("pruning")
    if not pc:
        raise ConfigError("config pruning: no pruning block")
    return pc


def _budgets(pc: dict) -> dict:
    return {"budgets": list(pc["budgets"]), "keep_ratios": list(pc["keep_ratios"]),
            "convention": pc["budget_convention"]}


def _scores(pc: dict) -> dict:
    return {"head_strategies": list(pc["head_strategies"]), "query_strategies": list(pc["query_strategies"]),
            "fixed_query": pc["fixed_query"], "fixed_head": pc["fixed_head"], "n_heads": pc["n_heads"],
            "top_k": pc["top_k"], "seed": pc["random"]["seed"], "n_draws": pc["random"]["draws"],
            "encoder_layer": pc["encoder_layer"]}


def offline_options(cfg: dict) -> dict:
    """What a ``pruning_offline`` job reads (module docstring)."""
    pc = _block(cfg)
    return {"prune_layer": pc["prune_layer"], "scores": _scores(pc), "budgets": _budgets(pc),
            "step": pc["offline"]["step"]}


def online_options(cfg: dict) -> dict:
    """What a ``pruning_online`` job reads (module docstring)."""
    pc = _block(cfg)
    online = {k: pc["online"][k] for k in ("eval_set", "n_items", "seed", "chunks", "max_new_tokens", "modes",
                                           "positions")}
    return {"prune_layer": pc["prune_layer"], "scores": _scores(pc), "budgets": _budgets(pc), "online": online}


def train_options(cfg: dict, variant: str) -> dict:
    """What the ``train_pruner`` job of learned variant ``variant`` reads (module docstring); ConfigError
    for an unknown variant."""
    pc = _block(cfg)
    lc = pc["learned"]
    spec = next((v for v in lc["variants"] if v["name"] == variant), None)
    if spec is None:
        raise ConfigError(f"config pruning.learned.variants: no variant {variant!r}")
    shared = {"dim": lc["dim"], "n_heads": lc["n_heads"], "residual_scale": lc["residual_scale"]}
    own = {k: spec[k] for k in ("use_attn_residual", "attn_residual_weight", "learnable_attn_weight")}
    return {"prune_layer": pc["prune_layer"], "spec": {**shared, **own}, "train": dict(lc["train"])}


def learned_options(cfg: dict) -> dict:
    """What a ``pruning_learned`` job reads (module docstring)."""
    pc = _block(cfg)
    online = {k: pc["online"][k] for k in ("eval_set", "n_items", "seed", "chunks", "max_new_tokens", "positions")}
    return {"prune_layer": pc["prune_layer"], "budgets": _budgets(pc), "online": online}


def statistics_options(cfg: dict) -> dict:
    """The tables' ``confidence`` and ``alpha`` (``pruning.statistics``) and ``fractional``."""
    from ..scoring import BINARY_RULES

    pc = _block(cfg)
    return {**pc["statistics"], "fractional": pc["online"]["eval_set"]["scoring"] not in BINARY_RULES}


def check_prune_layer(prune_layer: int, n_layers: int, model: str) -> None:
    """The one check of ``pruning.prune_layer`` K against a model's L decoder layers: 1 ≤ K < L (the
    scores read layer K − 1, PyramidDrop's layer K, and layers K … L − 1 run on the kept tokens).
    Raises a one-line InputError naming the option and the model."""
    if not 1 <= prune_layer < n_layers:
        raise InputError(f"config pruning.prune_layer: {prune_layer} needs 1 <= K < {n_layers}, the decoder "
                         f"layers of model {model!r}")


def check(cfg: dict) -> None:
    """The pruning block's cross-references: online models exist and are of a family the pruning harness
    runs (:data:`vlmattn.families.ONLINE_PRUNING`), a step below ``extraction.max_new_tokens``, and for the
    offline scores an extraction that stores what they read — the prefill rows of every query strategy
    (``extraction.prefill_rows``, :data:`vlmattn.pruning.scorers.ROWS_NEEDED`) at layers K − 1 and K
    (``extraction.prefill_layers``)."""
    pc = cfg.get("pruning")
    if not pc:
        return
    lc = pc["learned"]
    if lc["enabled"]:
        names = [v["name"] for v in lc["variants"]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"config pruning.learned.variants: the names {twice} are used twice")
        if not pc["online"]["models"]:
            raise ConfigError("config pruning.learned: the learned pruners run on pruning.online.models, which is "
                              "empty")
        if lc["dim"] % lc["n_heads"]:
            raise ConfigError(f"config pruning.learned.dim: {lc['dim']} is not a multiple of n_heads ({lc['n_heads']})")
    es = pc["online"]["eval_set"]
    need = {"shapes": [], "sheet": ["sheet"], "pope": ["annotations", "images"]}[es["kind"]]
    for key in need:
        if not es[key]:
            raise ConfigError(f"config pruning.online.eval_set.{key}: an eval_set of kind {es['kind']} needs it")
    if es["kind"] == "shapes" and es["scoring"] != "exact":
        raise ConfigError(f"config pruning.online.eval_set.scoring: the shapes set is scored by exact, not "
                          f"{es['scoring']}")
    for m in pc["online"]["models"]:
        if m not in cfg["models"]:
            raise ConfigError(f"config pruning.online.models: unknown model {m!r}")
        if cfg["models"][m]["family"] not in ONLINE_PRUNING:
            raise ConfigError(f"config pruning.online.models: model {m!r} is {cfg['models'][m]['family']}; online "
                              f"pruning runs the families {', '.join(ONLINE_PRUNING)}")
    if not pc["offline"]["enabled"]:
        return
    ex = cfg["extraction"]
    if pc["offline"]["step"] >= ex["max_new_tokens"]:
        raise ConfigError(f"config pruning.offline.step: {pc['offline']['step']} is not below "
                          f"extraction.max_new_tokens ({ex['max_new_tokens']})")
    queries = [*pc["query_strategies"], pc["fixed_query"]]
    need = max((ROWS_NEEDED[q] for q in queries), key=PREFILL_ROW_ORDER.index)
    if PREFILL_ROW_ORDER.index(ex["prefill_rows"]) < PREFILL_ROW_ORDER.index(need):
        who = next(q for q in queries if ROWS_NEEDED[q] == need)
        raise ConfigError(f"config pruning: query strategy {who!r} reads prefill rows that extraction.prefill_rows: "
                          f"{ex['prefill_rows']} does not store; set extraction.prefill_rows: {need}")
    layers = ex["prefill_layers"]
    k = pc["prune_layer"]
    if layers != "all" and not {k - 1, k} <= set(layers):
        raise ConfigError(f"config pruning.prune_layer: {k} scores from decoder layers {k - 1} and {k}, but "
                          f"extraction.prefill_layers stores {list(layers)}; add them")
