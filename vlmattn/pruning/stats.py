"""Statistics of an online pruning evaluation (the rows of :func:`vlmattn.pruning.evaluate.evaluate`):
accuracy with a confidence interval, agreement with the unpruned model and a paired test against it.

Per (mode, study, scorer, budget), over the n items that have both a pruned row and the unpruned row:

    accuracy   x / n, x = items answered correctly
    CI         Wilson score interval (closed form, :func:`vlmattn.stats.wilson_interval`), no resampling
    agreement  share of items whose answer equals the unpruned model's
    McNemar    exact two-sided test of equal accuracy on the discordant items: with b = items the pruned
               run gets right and the unpruned one wrong (``n_gained``), c = the reverse (``n_lost``),
               p = P(|X − (b+c)/2| ≥ |b − (b+c)/2|) for X ~ Binomial(b + c, ½)
               (:func:`scipy.stats.binomtest`); p = 1 without discordant items
    p_adj      Benjamini–Hochberg over the scorers of the table within each mode and budget
               (:func:`vlmattn.stats.bh_adjust`); ``significant`` = p_adj < α

With a fractional scoring rule (VQAv2/TextVQA accuracy, ``fractional=True``) the rows' ``score`` is
averaged instead: accuracy = mean score, ``n_correct`` = items with score 1, the interval is Student's t
(:func:`vlmattn.stats.mean_interval`; no binomial interval fits a mean of fractions), ``n_gained`` /
``n_lost`` = items whose score rose / fell against the unpruned run, and p is the paired sign-flip
permutation test of the mean score difference (:func:`vlmattn.stats.paired_sign_flip`, 9,999 draws,
seed 0; exact for n ≤ 13), McNemar's test being for 0/1 outcomes only.

No torch import: the tables are computed from the stored rows alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import bh_adjust, mcnemar_exact, mean_interval, paired_sign_flip, wilson_interval

TABLE_COLUMNS = ["mode", "study", "scorer", "budget", "kept", "average_tokens", "n_items", "n_correct", "accuracy",
                 "ci_low", "ci_high", "unpruned_accuracy", "agreement", "n_gained", "n_lost", "p", "p_adj",
                 "significant", "recall", "flops_fraction"]
#: the studies of :func:`ablation_tables`, each shown beside the baselines (random draws, pooling)
TABLES = ("study_a", "study_b", "published")
RANKED_BY = ("accuracy", "recall")


def accuracy_table(rows: pd.DataFrame, *, confidence: float = 0.95, alpha: float = 0.05,
                   fractional: bool = False) -> pd.DataFrame:
    """One row per (mode, study, scorer, budget) of the pruned ``rows`` (columns :data:`TABLE_COLUMNS`,
    module docstring), each paired by item with the unpruned rows (``study == "unpruned"``). ``recall``
    and ``flops_fraction`` are means over the items (recall ignoring NaN); measured times are in
    :func:`speed_table`, so that the same rows give the same table on every machine. Sorted by mode,
    budget (descending), study, accuracy (descending), scorer.
    ``fractional``: the rows' ``score`` is a fraction (module docstring).
    Raises ValueError when an item lacks its unpruned row or a scorer has two rows for one item, mode
    and budget."""
    need = {"item", "mode", "study", "scorer", "budget", "kept", "average_tokens", "correct", "answer", "recall",
            "flops_fraction", *(["score"] if fractional else [])}
    missing = need - set(rows.columns)
    if missing:
        raise ValueError(f"rows lack the columns {sorted(missing)}")
    base = rows[rows["study"] == "unpruned"].set_index("item")
    if base.index.duplicated().any():
        raise ValueError("rows hold more than one unpruned row for an item")
    pruned = rows[rows["study"] != "unpruned"]
    if pruned.duplicated(["mode", "study", "scorer", "budget", "item"]).any():
        raise ValueError("rows hold two rows of one scorer for the same item and budget")
    lacking = sorted(set(pruned["item"]) - set(base.index))
    if lacking:
        raise ValueError(f"items {lacking[:5]} have pruned rows but no unpruned row")
    out = []
    for (mode, study, scorer, budget), g in pruned.groupby(["mode", "study", "scorer", "budget"], sort=False):
        ref = base.loc[g["item"]]
        n = len(g)
        if fractional:
            sc, ref_sc = g["score"].to_numpy(np.float64), ref["score"].to_numpy(np.float64)
            x, accuracy, unpruned = int((sc == 1).sum()), float(sc.mean()), float(ref_sc.mean())
            low, high = mean_interval(sc, confidence=confidence)
            gained, lost = int((sc > ref_sc).sum()), int((sc < ref_sc).sum())
            p = paired_sign_flip(sc, ref_sc, n_resamples=9999, seed=0)
        else:
            ok, ref_ok = g["correct"].to_numpy(bool), ref["correct"].to_numpy(bool)
            x, accuracy, unpruned = int(ok.sum()), int(ok.sum()) / n, float(ref_ok.mean())
            low, high = wilson_interval(x, n, confidence=confidence)
            gained, lost = int((ok & ~ref_ok).sum()), int((~ok & ref_ok).sum())
            p = mcnemar_exact(gained, lost)
        out.append({"mode": mode, "study": study, "scorer": scorer, "budget": int(budget),
                    "kept": float(g["kept"].mean()), "average_tokens": float(g["average_tokens"].mean()),
                    "n_items": n, "n_correct": x, "accuracy": accuracy, "ci_low": float(low), "ci_high": float(high),
                    "unpruned_accuracy": unpruned,
                    "agreement": float((g["answer"].to_numpy() == ref["answer"].to_numpy()).mean()),
                    "n_gained": gained, "n_lost": lost, "p": p,
                    "recall": float(np.nanmean(g["recall"])) if g["recall"].notna().any() else np.nan,
                    "flops_fraction": float(g["flops_fraction"].mean())})
    table = pd.DataFrame(out, columns=[c for c in TABLE_COLUMNS if c not in ("p_adj", "significant")])
    table["p_adj"] = np.nan
    for _, idx in table.groupby(["mode", "budget"]).groups.items():
        table.loc[idx, "p_adj"] = bh_adjust(table.loc[idx, "p"].to_numpy())
    table["significant"] = table["p_adj"] < alpha
    table = table.sort_values(["mode", "budget", "study", "accuracy", "scorer"],
                              ascending=[True, False, True, False, True])
    return table[TABLE_COLUMNS].reset_index(drop=True)


def ablation_tables(rows: pd.DataFrame, *, confidence: float = 0.95, alpha: float = 0.05,
                    fractional: bool = False) -> dict[str, pd.DataFrame]:
    """``{"study_a", "study_b", "published"} → accuracy_table`` of that study's rows together with the
    baseline rows (random draws and pooling), so the BH adjustment runs over the study's scorers and
    the baselines within each budget."""
    return {name: accuracy_table(rows[rows["study"].isin([name, "baseline", "unpruned"])], confidence=confidence,
                                 alpha=alpha, fractional=fractional) for name in TABLES}


def _ranked(table: pd.DataFrame, budget: int, by: str, n: int, best: bool) -> pd.DataFrame:
    if by not in RANKED_BY:
        raise ValueError(f"by must be one of {RANKED_BY}, got {by!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if "mode" in table.columns and table["mode"].nunique() > 1:
        raise ValueError(f"table holds modes {sorted(table['mode'].unique())}: rank one mode at a time")
    t = table[table["budget"] == budget]
    if t.empty:
        raise ValueError(f"budget {budget} is not in the table (budgets: {sorted(set(table['budget']))})")
    t = t[t[by].notna()].sort_values([by, "scorer"], ascending=[not best, True])
    return t.head(n).reset_index(drop=True)


def best_scorers(table: pd.DataFrame, *, budget: int, by: str = "accuracy", n: int = 3) -> pd.DataFrame:
    """The ``n`` rows of ``table`` (:func:`accuracy_table`) at ``budget`` with the highest ``by``
    (``accuracy`` or ``recall``; NaN left out), ties by scorer name."""
    return _ranked(table, budget, by, n, best=True)


def worst_scorers(table: pd.DataFrame, *, budget: int, by: str = "accuracy", n: int = 3) -> pd.DataFrame:
    """The ``n`` rows of ``table`` at ``budget`` with the lowest ``by`` (NaN left out), ties by scorer name."""
    return _ranked(table, budget, by, n, best=False)


RANK_COLUMNS = ["study", "mode", "budget", "kept", "by", "n_ranked", "best", "best_value", "worst", "worst_value",
                "random_rank", "random_value", "pooling_rank", "pooling_value"]


def rank_table(table: pd.DataFrame, *, study: str) -> pd.DataFrame:
    """Where the scorers of ``study`` and the baselines rank, per mode, budget and measure (``by`` in
    ``accuracy``, ``recall``) of an :func:`accuracy_table`: ``best``/``worst`` = the study's scorers with
    the highest / lowest value (ties by name); ``random_rank``/``pooling_rank`` = the rank (1 = best,
    ties share the better rank) of the baselines among the study's scorers and the two baselines, the
    random draws ``random:<d>`` pooled into one entry, their mean; ``n_ranked`` entries in all. NaN
    values are left out of the ranking."""
    out = []
    for (mode, budget), g in table.groupby(["mode", "budget"], sort=False):
        own = g[g["study"] == study]
        rnd = g[g["scorer"].str.startswith("random:")]
        pool = g[g["scorer"] == "pooling"]
        for by in RANKED_BY:
            entries = pd.concat([own.set_index("scorer")[by],
                                 pd.Series({"random": rnd[by].mean() if len(rnd) else np.nan}),
                                 pool.set_index("scorer")[by]]).dropna()
            ranks = entries.rank(ascending=False, method="min")
            mine = own[own[by].notna()].sort_values([by, "scorer"], ascending=[False, True])
            low = own[own[by].notna()].sort_values([by, "scorer"], ascending=[True, True])
            out.append({"study": study, "mode": mode, "budget": int(budget), "kept": float(g["kept"].mean()),
                        "by": by, "n_ranked": len(entries),
                        "best": mine["scorer"].iloc[0] if len(mine) else None,
                        "best_value": float(mine[by].iloc[0]) if len(mine) else np.nan,
                        "worst": low["scorer"].iloc[0] if len(low) else None,
                        "worst_value": float(low[by].iloc[0]) if len(low) else np.nan,
                        "random_rank": float(ranks.get("random", np.nan)),
                        "random_value": float(entries.get("random", np.nan)),
                        "pooling_rank": float(ranks.get("pooling", np.nan)),
                        "pooling_value": float(entries.get("pooling", np.nan))})
    return pd.DataFrame(out, columns=RANK_COLUMNS)


SPEED_COLUMNS = ["mode", "layer", "budget", "kept", "n_runs", "flops_fraction", "prefill_s", "decode_s",
                 "prefill_speedup", "decode_speedup", "peak_memory_bytes"]


def speed_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Measured cost per (mode, layer, budget) of the runs in ``rows`` (the rows of
    :func:`vlmattn.pruning.evaluate.evaluate`; rows that reused another scorer's run, ``reused``, are
    left out): the number of runs, the mean FLOPs fraction, the mean prefill and decode seconds and
    peak memory, and the speed-ups ``mean unpruned time / mean time`` (the ``unpruned`` rows, one per
    item, are the first row, mode ``none``). Wall times vary from run to run and machine to machine."""
    runs = rows[~rows["reused"].astype(bool)]
    base = runs[runs["study"] == "unpruned"]
    if base.empty:
        raise ValueError("rows hold no unpruned row")
    pre, dec = base["prefill_s"].mean(), base["decode_s"].mean()
    out = []
    for (mode, layer, budget), g in runs.groupby(["mode", "layer", "budget"], sort=False):
        out.append({"mode": mode, "layer": int(layer), "budget": int(budget), "kept": float(g["kept"].mean()),
                    "n_runs": len(g), "flops_fraction": float(g["flops_fraction"].mean()),
                    "prefill_s": float(g["prefill_s"].mean()), "decode_s": float(g["decode_s"].mean()),
                    "prefill_speedup": float(pre / g["prefill_s"].mean()),
                    "decode_speedup": float(dec / g["decode_s"].mean()) if g["decode_s"].mean() > 0 else np.nan,
                    "peak_memory_bytes": float(g["peak_memory_bytes"].mean())})
    table = pd.DataFrame(out, columns=SPEED_COLUMNS)
    order = table["mode"].map(lambda m: m != "none")
    return (table.assign(_o=order).sort_values(["_o", "mode", "layer", "budget"], ascending=[True, True, True, False])
            .drop(columns="_o").reset_index(drop=True))


#: the published signal the learned pruners are compared with
COMPARED_SIGNAL = "fastv"


def best_strategy(rows: pd.DataFrame, *, mode: str = "drop") -> str | None:
    """The head- or query-selection strategy (study A or B) with the highest accuracy averaged over the
    budgets in ``mode`` (ties by name), accuracy being the mean ``score`` (``correct`` in rows without
    one); None without such rows. Chosen on the same questions it is then compared on, which favours it."""
    own = rows[rows["study"].isin(["study_a", "study_b"]) & (rows["mode"] == mode)]
    if own.empty:
        return None
    col = "score" if "score" in own.columns else "correct"
    acc = own.groupby(["scorer", "budget"])[col].mean().groupby("scorer").mean()
    return str(acc.reset_index().sort_values([col, "scorer"], ascending=[False, True])["scorer"].iloc[0])


def learned_table(rows: pd.DataFrame, learned: pd.DataFrame, *, confidence: float = 0.95, alpha: float = 0.05,
                  fractional: bool = False) -> pd.DataFrame:
    """:func:`accuracy_table` (mode ``drop``) of the learned pruners' rows ``learned`` (study ``learned``)
    beside the rows of :data:`COMPARED_SIGNAL`, the :func:`best_strategy`, the random draws and pooling
    from the ablation ``rows`` of the same questions, BH-adjusted together within each budget. The
    unpruned rows come from ``rows``; ``learned``'s own unpruned answers must equal them (the same model
    on the same questions), else ValueError."""
    base = rows[rows["study"] == "unpruned"].set_index("item")["answer"]
    own = learned[learned["study"] == "unpruned"].set_index("item")["answer"]
    shared = own.index.intersection(base.index)
    if len(shared) != len(own) or not (own.loc[shared] == base.loc[shared]).all():
        differ = (sorted(set(own.index) - set(shared))
                  or sorted(shared[(own.loc[shared] != base.loc[shared]).to_numpy()]))
        raise ValueError(f"the learned pruners' unpruned answers differ from the ablation's on items {differ[:5]}")
    keep = {COMPARED_SIGNAL, "pooling", best_strategy(rows)}
    drop = rows[rows["mode"] == "drop"]
    compared = drop[drop["scorer"].isin(keep) | drop["scorer"].str.startswith("random:")]
    items = set(learned["item"])
    together = pd.concat([rows[(rows["study"] == "unpruned") & rows["item"].isin(items)],
                          compared[compared["item"].isin(items)],
                          learned[learned["study"] != "unpruned"]], ignore_index=True)
    return accuracy_table(together, confidence=confidence, alpha=alpha, fractional=fractional)
