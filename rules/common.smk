# Config validation (schema + defaults + input checks) and the helpers the rules share.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from vlmattn.config import (
    extraction_batches,
    load_config,
    samples as config_samples,
)
from vlmattn.errors import VlmattnError
from vlmattn.metrics import get_metric, metric_params, sample_plots

try:
    config.update(load_config(config, base_dir=Path.cwd()))
except VlmattnError as err:
    sys.exit(f"vlmattn: {err}")

R = config["results"]
SAMPLES = config_samples(config)
BATCHES = extraction_batches(config)
METRICS = list(config["metrics"])
LIB = Path(workflow.basedir) / "vlmattn"
ENV = "../envs/vlmattn.yaml"


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    image=r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*",
    question=r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*",


def image_file(image):
    files = config["images"]["files"]
    if image in files:
        return files[image]["path"]
    return f"{R}/images/{image}.png"


def image_objects(image):
    """Ground-truth objects of a user image (synthetic scenes carry theirs in a JSON file)."""
    return config["images"]["files"].get(image, {}).get("objects", [])


def annotation_file(image):
    """The JSON annotation of a synthetic scene; None for a user image."""
    if image in config["images"]["files"]:
        return None
    return f"{R}/images/{image}.json"


def model_path(model):
    spec = config["models"][model]
    return f"{R}/models/{model}" if "build" in spec else spec["path"]


def sample_record(s):
    """What an extraction job needs to know about one sample."""
    return {
        "image_id": s.image,
        "question_id": s.question,
        "question": config["questions"][s.question]["text"],
        "image": image_file(s.image),
        "annotation": annotation_file(s.image),
        "objects": image_objects(s.image),
    }


def model_inputs(model):
    return [model_path(model)] if "build" in config["models"][model] else []


def model_params(model):
    return {**config["models"][model], "id": model, "path": model_path(model)}


def sample_files(pattern, **kw):
    return [
        pattern.format(model=s.model, image=s.image, question=s.question, **kw)
        for s in SAMPLES
    ]


def metric_config(metric):
    """The params of a metric's jobs: its block, plus the sink rule when it excludes sinks."""
    return metric_params(metric, config["metrics"])


def sample_plot_files(metric):
    return [
        f"{R}/plots/samples/{{model}}/{{image}}__{{question}}/{p}.png"
        for p in sample_plots(metric)
    ]


def all_outputs():
    out = [f"{R}/tables/answers.csv"]
    for m in METRICS:
        out.append(f"{R}/tables/{m}.csv")
        out += [f"{R}/plots/{p}.png" for p in get_metric(m).PLOTS]
        for pattern in sample_plot_files(m):
            out += sample_files(pattern)
    for m, spec in config["models"].items():
        if spec.get("build", {}).get("kind") == "trained":
            out += [f"{R}/tables/training_{m}.csv", f"{R}/plots/training_{m}.png"]
    if config.get("validation"):
        out.append(f"{R}/tables/validation.csv")
    return out


BUILT = [m for m, c in config["models"].items() if "build" in c]
TRAINED = [m for m in BUILT if config["models"][m]["build"]["kind"] == "trained"]


def model_alternatives(models):
    """A wildcard constraint matching exactly these model ids (nothing when empty)."""
    return "|".join(models) if models else "(?!)"
