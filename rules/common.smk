# Config validation (schema + defaults + input checks) and the helpers the rules share.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from vlmattn.config import load_config, samples as config_samples
from vlmattn.errors import VlmattnError
from vlmattn.metrics import get_metric, metric_params, sample_plots

try:
    config.update(load_config(config, base_dir=Path.cwd()))
except VlmattnError as err:
    sys.exit(f"vlmattn: {err}")

R = config["results"]
SAMPLES = config_samples(config)
METRICS = list(config["metrics"])
LIB = Path(workflow.basedir) / "vlmattn"
ENV = "../envs/vlmattn.yaml"


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    image=r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*",
    question=r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*",


def image_path(wildcards):
    files = config["images"]["files"]
    if wildcards.image in files:
        return files[wildcards.image]["path"]
    return f"{R}/images/{wildcards.image}.png"


def image_objects(wildcards):
    """Ground-truth objects of a user image (synthetic scenes carry theirs in a JSON file)."""
    return config["images"]["files"].get(wildcards.image, {}).get("objects", [])


def annotation_input(wildcards):
    if wildcards.image in config["images"]["files"]:
        return []
    return f"{R}/images/{wildcards.image}.json"


def model_path(model):
    spec = config["models"][model]
    return f"{R}/models/{model}" if "build" in spec else spec["path"]


def model_input(wildcards):
    return (
        [model_path(wildcards.model)]
        if "build" in config["models"][wildcards.model]
        else []
    )


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
    return out
