# Helpers of rules/attribution.smk: its config, wildcard constraints, input and output lists.

from vlmattn.attribution.options import (
    attribute_options,
    attribution_samples,
    plot_options,
    table_options,
)
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
