# Helpers of rules/contrasts.smk: its config, wildcard constraints, input and output lists.

from vlmattn.contrasts.options import contrast_options, contrast_pairs
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
