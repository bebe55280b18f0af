# Helpers of rules/pruning.smk: its config, wildcard constraints, input and output lists.

import re
from vlmattn.pruning.options import (
    learned_options,
    offline_options,
    online_options,
    statistics_options,
    train_options,
)
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
