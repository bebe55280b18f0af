# Config validation (schema + defaults + input checks), the dataset, its shards, and the helpers the
# rules share.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from vlmattn.config import (
    load_config,
    load_dataset,
    shard_label,
    shard_of,
    shard_samples,
)
from vlmattn.errors import VlmattnError
from vlmattn.images.synthetic import scene_spec
from vlmattn.metrics import get_metric, metric_params, sample_plots

try:
    config.update(load_config(config, base_dir=Path.cwd()))
    DATA = load_dataset(config, base_dir=Path.cwd())
except VlmattnError as err:
    sys.exit(f"vlmattn: {err}")

R = config["results"]
SAMPLES = DATA.samples
# model -> shard label -> samples (sorted by name); only non-empty shards
SHARDS = shard_samples(SAMPLES, config["shards"])
METRICS = list(config["metrics"])
LIB = Path(workflow.basedir) / "vlmattn"
# conda environments (--sdm conda): the model stages need torch, the analysis stages do not
ENV_MODELS = "../envs/extraction.yaml"
ENV_ANALYSIS = "../envs/analysis.yaml"


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    image=r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*",
    question=r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*",
    shard=r"\d+",


def image_file(image):
    return DATA.images[image].path


def synthetic_shapes(image):
    """The shapes the draw rule draws for synthetic image ``image`` (None for another id)."""
    try:
        return scene_spec(image, config["seed"])
    except KeyError:
        return None


def model_path(model):
    spec = config["models"][model]
    return f"{R}/models/{model}" if "build" in spec else spec["path"]


def model_inputs(model):
    return [model_path(model)] if "build" in config["models"][model] else []


def model_params(model):
    return {**config["models"][model], "id": model, "path": model_path(model)}


def shard_members(w):
    return SHARDS[w.model][w.shard]


def sample_shard(s):
    return shard_label(shard_of(s.name, config["shards"]), config["shards"])


def shard_index(model, shard):
    """The index an extraction job writes: one row per sample of the shard, with its HDF5 file."""
    return f"{R}/attention/{model}/shards/{shard}.csv"


def all_shard_indexes():
    return [shard_index(m, k) for m, by in SHARDS.items() for k in by]


def shard_tables(metric):
    return [f"{R}/metrics/{metric}/{m}/{k}.csv" for m, by in SHARDS.items() for k in by]


def metric_config(metric):
    """The params of a metric's jobs: its block, plus the sink rule when it excludes sinks."""
    return metric_params(metric, config["metrics"])


def figure_samples():
    """Per model, the first `sample_figures` samples in name order: those get per-sample figures."""
    n = config["sample_figures"]
    firsts = []
    for by in SHARDS.values():
        mine = sorted(
            (s for members in by.values() for s in members), key=lambda s: s.name
        )
        firsts += mine[:n]
    return firsts


def attention_dir(model):
    """Where the extraction jobs put a model's HDF5 files, one per sample: ``{image}__{question}.h5``."""
    return f"{R}/attention/{model}"


def figure_dir(s):
    return f"{R}/plots/samples/{s.model}/{s.name}"


def figure_file(s, plot):
    return f"{figure_dir(s)}/{plot}.png"


def all_outputs():
    out = [f"{R}/tables/answers.csv", f"{R}/plots/overview.png"]
    for m in METRICS:
        out.append(f"{R}/tables/{m}.csv")
        out += [f"{R}/plots/{p}.png" for p in get_metric(m).PLOTS]
        out += [figure_file(s, p) for s in FIGURE_SAMPLES for p in sample_plots(m)]
    for m, spec in config["models"].items():
        if spec.get("build", {}).get("kind") == "trained":
            out += [f"{R}/tables/training_{m}.csv", f"{R}/plots/training_{m}.png"]
    if config.get("validation"):
        out.append(f"{R}/tables/validation.csv")
    return out + contrast_outputs() + pruning_outputs() + attribution_outputs()


FIGURE_SAMPLES = figure_samples()
BUILT = [m for m, c in config["models"].items() if "build" in c]
TRAINED = [m for m in BUILT if config["models"][m]["build"]["kind"] == "trained"]


def model_alternatives(models):
    """A wildcard constraint matching exactly these model ids (nothing when empty)."""
    return "|".join(models) if models else "(?!)"


# Contrasts (rules/contrasts.smk)
from vlmattn.config import contrast_options, contrast_pairs
from vlmattn.contrasts.analyses import TABLES as CONTRAST_TABLES, analysis_options

CONTRASTS = list(config["contrasts"])
CAUSAL = [c for c in CONTRASTS if config["contrasts"][c]["causal"]["enabled"]]
CAUSAL_TABLES = ("causal", "causal_draws", "causal_heads")
CONTRAST_PLOTS = ("top_heads", "head_heatmap", "encoder_divergence", "overlay")


wildcard_constraints:
    contrast=model_alternatives(CONTRASTS),


def contrast_dir(contrast, model):
    return f"{R}/contrasts/{contrast}/{model}"


def contrast_files(w, side):
    """HDF5 files of condition `side` (0: A, 1: B) of the contrast's pairs, in pair order."""
    return [
        f"{R}/attention/{w.model}/{p[side].name}.h5"
        for p in contrast_pairs(config, w.contrast, w.model)
    ]


def contrast_indexes(w):
    """The shard indexes holding the contrast's samples (the extraction jobs they come from)."""
    return sorted(
        {
            shard_index(s.model, sample_shard(s))
            for p in contrast_pairs(config, w.contrast, w.model)
            for s in p
        }
    )


def contrast_table_inputs(table):
    contrasts = CAUSAL if table in CAUSAL_TABLES else CONTRASTS
    return [
        f"{contrast_dir(c, m)}/{table}.csv" for c in contrasts for m in config["models"]
    ]


def contrast_outputs():
    """Merged tables and per-(contrast, model) plots, for rule all."""
    tables = [t for names in CONTRAST_TABLES.values() for t in names]
    tables += list(CAUSAL_TABLES) if CAUSAL else []
    out = [f"{R}/tables/contrast_{t}.csv" for t in tables] if CONTRASTS else []
    for c in CONTRASTS:
        for m in config["models"]:
            out += [f"{R}/plots/contrasts/{c}/{m}/{p}.png" for p in CONTRAST_PLOTS]
            if c in CAUSAL:
                out.append(f"{R}/plots/contrasts/{c}/{m}/causal.png")
    return out


# Pruning ablations (rules/pruning.smk)
import re
from vlmattn.config import pruning_options
from vlmattn.pruning.jobs import ONLINE_TABLES as PRUNING_TABLES

PRUNING = config.get("pruning") or {}
PRUNING_OFFLINE = bool(PRUNING) and PRUNING["offline"]["enabled"]
PRUNING_ONLINE = list(PRUNING["online"]["models"]) if PRUNING else []
PRUNING_RES = (
    PRUNING["online"]["resources"] if PRUNING else config["extraction"]["resources"]
)
PRUNING_MODES = list(PRUNING["online"]["modes"]) if PRUNING else []
LEARNED = (
    [v["name"] for v in PRUNING["learned"]["variants"]]
    if PRUNING and PRUNING["learned"]["enabled"]
    else []
)


wildcard_constraints:
    chunk=r"\d+",
    variant="|".join(re.escape(v) for v in LEARNED) if LEARNED else "(?!)",


def pruning_offline_shards():
    return [f"{R}/pruning/{m}/offline/{k}.csv" for m, by in SHARDS.items() for k in by]


def pruning_online_chunks():
    n = PRUNING["online"]["chunks"] if PRUNING else 0
    return [f"{R}/pruning/{m}/online/{c}.csv" for m in PRUNING_ONLINE for c in range(n)]


def pruning_outputs():
    """Tables and figures of the pruning ablations, for rule all."""
    out = []
    if PRUNING_OFFLINE:
        out.append(f"{R}/tables/pruning_offline.csv")
        out += [f"{R}/plots/pruning/{m}/offline.png" for m in SHARDS]
    if PRUNING_ONLINE:
        out += [f"{R}/tables/pruning_{t}.csv" for t in PRUNING_TABLES]
        out += [
            f"{R}/plots/pruning/{m}/{s}_{mode}.png"
            for m in PRUNING_ONLINE
            for s in PRUNING_TABLES[:3]
            for mode in PRUNING_MODES
        ]
    if LEARNED:
        out += [f"{R}/tables/pruning_learned.csv", f"{R}/tables/pruner_training.csv"]
        out += [
            f"{R}/plots/pruning/{m}/{f}.png"
            for m in PRUNING_ONLINE
            for f in ("learned", "pruner_training")
        ]
    return out


def pruner_files(model, ext):
    return [f"{R}/pruners/{model}/{v}.{ext}" for v in LEARNED]


def learned_chunks():
    n = PRUNING["online"]["chunks"] if PRUNING else 0
    return [
        f"{R}/pruning/{m}/learned/{c}.csv" for m in PRUNING_ONLINE for c in range(n)
    ]


# Attribution, alignment, modality gap and faithfulness (rules/attribution.smk)
from vlmattn.config import attribution_options, attribution_samples
from vlmattn.attribution.jobs import TABLES as ATTRIBUTION_TABLES

ATTRIBUTION = config.get("attribution") or {}
ATTRIBUTION_RES = (
    ATTRIBUTION["resources"] if ATTRIBUTION else config["extraction"]["resources"]
)
# model -> shards holding at least one attributed sample
ATTRIBUTION_SHARDS = {}
if ATTRIBUTION:
    for s in attribution_samples(config, SAMPLES):
        ATTRIBUTION_SHARDS.setdefault(s.model, set()).add(sample_shard(s))
ATTRIBUTION_SHARDS = {m: sorted(k) for m, k in sorted(ATTRIBUTION_SHARDS.items())}
if ATTRIBUTION and not ATTRIBUTION_SHARDS:
    sys.exit(
        "vlmattn: config attribution: no sample of its models answers its questions "
        f"(models {ATTRIBUTION['models']}, questions {ATTRIBUTION['questions']})"
    )


def attribution_shard_files(kind):
    return [
        f"{R}/attribution/{m}/{kind}/{k}.csv"
        for m, ks in ATTRIBUTION_SHARDS.items()
        for k in ks
    ]


def attribution_outputs():
    """Tables and figures of the attribution analyses, for rule all."""
    if not ATTRIBUTION_SHARDS:
        return []
    out = [f"{R}/tables/{t}.csv" for t in ATTRIBUTION_TABLES]
    out += [
        f"{R}/plots/attribution/{m}/{f}.png"
        for m in ATTRIBUTION_SHARDS
        for f in ATTRIBUTION_PLOTS
    ]
    return out


ATTRIBUTION_PLOTS = ("faithfulness", "overlays", "modality_gap")
