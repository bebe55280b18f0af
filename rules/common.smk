# Config validation (schema + defaults + every wing's checks), the dataset, its shards, and the
# helpers every rule file shares; each wing's own helpers live at the top of its rules file.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from vlmattn.codedeps import code_files
from vlmattn.config import load_dataset, shard_label, shard_of, shard_samples
from vlmattn.errors import VlmattnError
from vlmattn.images.synthetic import scene_spec
from vlmattn.metrics import get_metric, sample_plots, summary_extras
from vlmattn.workflow import load_config

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


def code_of(script, *modules):
    """A job's code inputs: the project files that workflow script ``script`` and the ``modules`` it
    loads by name read (vlmattn.codedeps.code_files), so editing any of them reruns the job and
    editing another file does not."""
    base = Path(workflow.basedir)
    return code_files(base, [base / "workflow_scripts" / script, *modules])


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


def training_sheets(model):
    """The sample sheets a model trained on a sheet reads (none for the shapes task)."""
    build = config["models"][model]["build"]
    if build["kind"] != "trained_on_sheet":
        return []
    return [
        build["spec"][k] for k in ("sheet", "heldout_sheet") if build["spec"].get(k)
    ]


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


def attention_dir(model):
    """Where the extraction jobs put a model's HDF5 files, one per sample: ``{image}__{question}.h5``."""
    return f"{R}/attention/{model}"


def all_outputs():
    out = [f"{R}/tables/answers.csv", f"{R}/plots/overview.png"]
    for m in METRICS:
        out.append(summary_file(m))
        out += [f"{R}/plots/{p}.png" for p in get_metric(m).PLOTS]
        out += [figure_file(s, p) for s in FIGURE_SAMPLES for p in sample_plots(m)]
    for m, spec in config["models"].items():
        if spec.get("build", {}).get("kind") in ("trained", "trained_on_sheet"):
            out += [f"{R}/tables/training_{m}.csv", f"{R}/plots/training_{m}.png"]
    if config.get("validation"):
        out.append(f"{R}/tables/validation.csv")
    return out + contrast_outputs() + pruning_outputs() + attribution_outputs()


BUILT = [m for m, c in config["models"].items() if "build" in c]
TRAINED = [
    m
    for m in BUILT
    if config["models"][m]["build"]["kind"] in ("trained", "trained_on_sheet")
]


def model_alternatives(models):
    """A wildcard constraint matching exactly these model ids (nothing when empty)."""
    return "|".join(models) if models else "(?!)"
