"""Importance scores over the V vision tokens of one sample, from cached attention, for visual-token
pruning: a higher score means the token is kept first (:func:`keep_indices`).

Notation: L decoder layers, H heads, N prompt tokens, R stored prefill rows at prompt positions
``positions [R]`` (``/attention/prefill_positions``), ``prefill [L, H, R, N]`` their attention weights
(softmax over all causal keys, as stored: no second softmax is applied anywhere here), V vision tokens
at prompt positions ``vision_index [V]``; ``image_positions`` are all prompt positions that belong to an
image (the vision tokens plus a CLS token fed to the language model, ``/vision/cls_positions``).
Text positions are the others; the **instruction** is the text after the last image position.

Layer convention (FastV): "prune at layer K" (0 < K ≤ L) means the score comes from the attention of
decoder layer K − 1 (0-based), the last layer that still sees every token, and the dropped tokens are
missing from layer K on. A score built from the query rows ``w [R]`` (weights, Σ_r w_r = 1) and the
heads ``S`` is

    a[h, v]   = Σ_r w_r · prefill[K−1, h, r, vision_index[v]]        image slice of the chosen rows [H, V]
    score[v]  = (1/|S|) Σ_{h ∈ S} a[h, v]   (|S| = ``n_heads``; S = every head for ``all_heads``: FastV)

Query strategies (:func:`query_weights`, the rows ``w`` puts weight on). The prompt's N positions split
into image positions, the **system** text before the first image and the **instruction** after the last
image (m positions ``p_1 < … < p_m``); ``text`` = every non-image position. ``M_r = Σ_h Σ_v
prefill[K−1, h, r, vision_index[v]]`` is row r's image attention summed over heads (``row_mass``).
The first nine are the query rules of LLaVA-FinePruner-Head (``modeling_llama_fastv_ablation_b.py``),
with its fall-backs:

* ``last_token``          the last prompt position N − 1, w = 1 (FastV);
* ``last_n_tokens``       the last 3 prompt positions (image positions too when m < 3), w = 1/3 each;
* ``last_5_tokens``       the last 5 prompt positions, w = 1/5 each;
* ``text_tokens_only``    the instruction p_1 … p_m, w = 1/m each (m = 0: ``last_token``);
* ``weighted_recent``     the last n = min(5, N) prompt positions with weights ``linspace(0.5, 1, n)``
  normalised to sum 1 (n = 5: 0.5, 0.625, 0.75, 0.875, 1 over 3.75; the last the largest);
* ``system_and_text``     every text position (system and instruction), equal weights (m = 0: the last
  3 system positions);
* ``attention_weighted``  every text position, w = softmax_r(M_r) over those rows;
* ``max_attention_token`` the one text position with the largest M_r (ties: the earlier, as
  ``torch.argmax``), w = 1;
* ``adaptive_by_length``  by m: m = 0 → ``last_token``; m ≤ 3 → ``text_tokens_only``; m ≤ 10 →
  ``weighted_recent`` over the last min(5, m) positions; m > 10 → ``attention_weighted``.

vlmattn's own query rules (earlier readings of those names, kept in the study under their own names):

* ``recent_mean``         the last ``n = min(5, max(1, ⌈m / 4⌉))`` instruction positions, equal weights;
* ``instruction_ramp``    the instruction with a linear ramp, w_j = j / Σ_{i=1}^m i;
* ``share_weighted``      the instruction weighted linearly by image attention, w_j = M_j / Σ_i M_i
  (equal weights when every M_j is 0);
* ``max_share_instruction`` the one instruction position with the largest M_j (ties: the later), w = 1.

Which rows are stored depends on ``extraction.prefill_rows``: ``last`` holds only N − 1 (enough for
``last_token``, :func:`fastv`, :func:`pyramiddrop`), ``text_after_image`` the instruction, ``all_text``
every text row (``system_and_text``, ``attention_weighted``, ``max_attention_token`` and, for m > 10,
``adaptive_by_length`` read the system rows too), ``all`` every row (``last_n_tokens``,
``last_5_tokens`` and ``weighted_recent`` read image rows when fewer tokens follow the image). A
strategy whose rows are missing raises ValueError naming the option it needs.

Head strategies (:func:`head_statistic`, on the image slice ``a [H, V]``; the ``n_heads`` heads with the
highest statistic are selected, the lowest for the entropies, ties broken by the lower head index; the
token score is the mean of the selected heads' rows). The first nine are LLaVA-FinePruner-Head's
(``modeling_llama_fastv_ablation_a.py``), including its second softmax ``p[h] = softmax_v(a[h])`` over
rows that are already softmax outputs (entropy, sparsity, weighted quality, Gini): at V = 576 that
softmax is nearly uniform, p ≈ (1 + a − ā)/V, so those four rank heads almost as ``variance`` does.

* ``sum``                 Σ_v a[h, v] (FinePruner's base method: the heads with the most image attention);
* ``variance``            Var_v a[h, v] (unbiased, as ``torch.var``; the same ranking as ddof 0);
* ``entropy``             −Σ_v p log(p + 1e−8), the lowest;
* ``max_attention``       max_v a[h, v];
* ``attention_range``     max_v a[h, v] − min_v a[h, v];
* ``sparsity``            Σ_v p[h, v]²;
* ``top_k_sum``           the sum of the ``top_k`` largest a[h, v] (FinePruner: 10);
* ``weighted_quality``    0.4 · max_v p + 0.4 · Σ_v p² + 0.2 / (#{v: p > 0.01} + 1e−8);
* ``gini_coefficient``    Σ_i (2i − V − 1) p_(i) / (V Σ_v p) over p sorted ascending.

vlmattn's own head rules (no second softmax; ``q[h] = a[h] / Σ_v a[h, v]`` the head's image attention
renormalised):

* ``all_heads``           no selection: every head, averaged (FastV's reduction; with ``last_token`` the
  same kept set as :func:`fastv`);
* ``renormalised_entropy`` −Σ_v q log q (0 log 0 = 0; +∞ for a head without image attention), the lowest;
* ``l2_norm``             ‖a[h]‖₂ (at a fixed mass, larger means more concentrated);
* ``renormalised_gini``   Gini of a[h]: Σ_i Σ_j |a_i − a_j| / (2 V Σ_v a_v) (0 for a uniform or empty head);
* ``entropy_peak_mass``   (1 − H(q) / log V + max_v q + Σ_v a) / 3, each term in [0, 1] (0 without image
  attention).

Published signals: :func:`fastv`, :func:`pyramiddrop`, :func:`sparsevlm` (language-model attention),
:func:`fastervlm`, :func:`visionzip_dominant` (vision-encoder CLS attention); baselines :func:`random_scores`
and :func:`pooling_scores`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: head strategies of LLaVA-FinePruner-Head (study A), then vlmattn's own
FINEPRUNER_HEAD_STRATEGIES = ("sum", "variance", "entropy", "max_attention", "attention_range", "sparsity",
                              "top_k_sum", "weighted_quality", "gini_coefficient")
OWN_HEAD_STRATEGIES = ("all_heads", "renormalised_entropy", "l2_norm", "renormalised_gini", "entropy_peak_mass")
HEAD_STRATEGIES = FINEPRUNER_HEAD_STRATEGIES + OWN_HEAD_STRATEGIES
#: query strategies of LLaVA-FinePruner-Head (study B), then vlmattn's own
FINEPRUNER_QUERY_STRATEGIES = ("last_token", "last_n_tokens", "last_5_tokens", "text_tokens_only", "weighted_recent",
                               "system_and_text", "attention_weighted", "max_attention_token", "adaptive_by_length")
OWN_QUERY_STRATEGIES = ("recent_mean", "instruction_ramp", "share_weighted", "max_share_instruction")
QUERY_STRATEGIES = FINEPRUNER_QUERY_STRATEGIES + OWN_QUERY_STRATEGIES
#: the narrowest extraction.prefill_rows mode that stores the rows a query strategy reads on a prompt
#: whose instruction (the text after the image) has more than 10 tokens
ROWS_NEEDED = {"last_token": "last", "system_and_text": "all_text", "attention_weighted": "all_text",
               "max_attention_token": "all_text", "adaptive_by_length": "all_text"} | {
    q: "text_after_image" for q in QUERY_STRATEGIES
    if q not in ("last_token", "system_and_text", "attention_weighted", "max_attention_token", "adaptive_by_length")}
#: the prefill_rows modes from narrowest to widest
ROW_MODES = ("last", "text_after_image", "all_text", "all")


# ------------------------------------------------------------------------------------------ layers
def score_layer(prune_layer: int, n_layers: int) -> int:
    """The 0-based decoder layer whose attention scores tokens pruned at layer ``prune_layer``: K − 1
    (FastV). Raises ValueError unless 1 ≤ K ≤ L (K = 0 has no layer before it: FastV draws a random
    subset there, see :func:`random_scores`)."""
    if not 1 <= prune_layer <= n_layers:
        raise ValueError(f"prune_layer must lie in 1 … {n_layers} (the number of decoder layers), got {prune_layer}")
    return prune_layer - 1


def _rows(positions: np.ndarray, wanted: np.ndarray, what: str, option: str) -> np.ndarray:
    """Indices into ``positions`` of the prompt positions ``wanted`` (ValueError naming the option when absent)."""
    positions = np.asarray(positions)
    where = {int(p): i for i, p in enumerate(positions)}
    missing = [int(p) for p in wanted if int(p) not in where]
    if missing:
        more = "…" if len(missing) > 5 else ""
        raise ValueError(f"{what} needs the prefill rows of prompt positions {missing[:5]}{more}, "
                         f"which are not stored: extract with extraction.prefill_rows: {option} (or a wider mode)")
    return np.array([where[int(p)] for p in wanted], np.int64)


def image_slice(prefill: np.ndarray, vision_index: np.ndarray, *, layer: int) -> np.ndarray:
    """``prefill[layer][:, :, vision_index]``: the stored rows' attention on the vision tokens, ``[H, R, V]``."""
    prefill = np.asarray(prefill)
    if prefill.ndim != 4:
        raise ValueError(f"prefill must be [L, H, R, N], got shape {prefill.shape}")
    return prefill[layer][..., np.asarray(vision_index, np.int64)].astype(np.float64)


# ------------------------------------------------------------------------------------------- query
def text_layout(n_tokens: int, image_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(text [N − I], instruction [m])``: the prompt positions that are not image positions, and those
    after the last image position (empty when the prompt ends with an image token)."""
    image_positions = np.asarray(image_positions, np.int64)
    text = np.setdiff1d(np.arange(n_tokens), image_positions)
    last_image = image_positions.max() if len(image_positions) else -1
    return text, text[text > last_image]


def rows_mode(wanted: np.ndarray, n_tokens: int, image_positions: np.ndarray) -> str:
    """The narrowest ``extraction.prefill_rows`` mode (:data:`ROW_MODES`) that stores the rows of the
    prompt positions ``wanted``: ``last`` for N − 1 alone, ``text_after_image`` for instruction rows,
    ``all_text`` for system rows, ``all`` for image rows."""
    text, instr = text_layout(n_tokens, image_positions)
    wanted = np.asarray(wanted, np.int64)
    if np.isin(wanted, text, invert=True).any():
        return "all"
    if np.isin(wanted, instr, invert=True).any():
        return "all_text"
    return "last" if set(wanted.tolist()) <= {n_tokens - 1} else "text_after_image"


def _chosen_rows(strategy: str, n_tokens: int, text: np.ndarray, instr: np.ndarray,
                 mass: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(positions [n], weights [n])`` of a query strategy (module docstring); ``mass(p)`` gives M_r of
    the prompt positions ``p``."""
    m = len(instr)
    if strategy == "adaptive_by_length":
        if m == 0:
            return _chosen_rows("last_token", n_tokens, text, instr, mass)
        if m <= 3:
            return _chosen_rows("text_tokens_only", n_tokens, text, instr, mass)
        if m <= 10:
            return _recent(n_tokens, min(5, m))
        return _chosen_rows("attention_weighted", n_tokens, text, instr, mass)
    if strategy == "last_token":
        return np.array([n_tokens - 1]), np.ones(1)
    if strategy in ("last_n_tokens", "last_5_tokens"):
        chosen = np.arange(max(0, n_tokens - (3 if strategy == "last_n_tokens" else 5)), n_tokens)
        return chosen, np.full(len(chosen), 1.0 / len(chosen))
    if strategy == "text_tokens_only":
        if m == 0:
            return _chosen_rows("last_token", n_tokens, text, instr, mass)
        return instr, np.full(m, 1.0 / m)
    if strategy == "weighted_recent":
        return _recent(n_tokens, 5)
    if strategy == "system_and_text":
        chosen = text if m else text[-3:]
        return chosen, np.full(len(chosen), 1.0 / max(len(chosen), 1))
    if strategy == "attention_weighted":
        s = mass(text)
        w = np.exp(s - s.max()) if len(s) else s
        return text, w / w.sum() if len(s) else w
    if strategy == "max_attention_token":
        s = mass(text)
        return text[int(np.argmax(s)):][:1], np.ones(min(len(text), 1))  # the earlier position on ties
    if strategy == "recent_mean":
        chosen = instr[-min(5, max(1, math.ceil(m / 4))):] if m else instr
        return chosen, np.full(len(chosen), 1.0 / max(len(chosen), 1))
    if strategy == "instruction_ramp":
        return instr, np.arange(1, m + 1, dtype=np.float64) / (m * (m + 1) / 2) if m else np.zeros(0)
    if strategy == "share_weighted":
        s = mass(instr)
        return instr, s / s.sum() if s.sum() > 0 else np.full(m, 1.0 / max(m, 1))
    if strategy == "max_share_instruction":
        s = mass(instr)
        j = m - 1 - int(np.argmax(s[::-1])) if m else 0  # the later position on ties
        return instr[j:j + 1], np.ones(min(m, 1))
    raise ValueError(f"unknown query strategy {strategy!r} (known: {', '.join(QUERY_STRATEGIES)})")


def _recent(n_tokens: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """FinePruner's ``weighted_recent``: the last ``window`` positions, ``linspace(0.5, 1, n)`` normalised."""
    chosen = np.arange(max(0, n_tokens - window), n_tokens)
    w = np.linspace(0.5, 1.0, len(chosen))
    return chosen, w / w.sum()


def query_weights(strategy: str, positions: np.ndarray, image_positions: np.ndarray, n_tokens: int, *,
                  row_mass: np.ndarray | None = None) -> np.ndarray:
    """Weights ``w [R]`` (Σ w = 1) over the stored prefill rows for a query strategy (module docstring).

    ``positions [R]``: prompt positions of the stored rows; ``row_mass [R]``: M_r, each row's attention
    on the vision tokens at the scoring layer summed over heads, needed by ``attention_weighted``,
    ``max_attention_token``, ``adaptive_by_length``, ``share_weighted`` and ``max_share_instruction``.
    Raises ValueError for an unknown strategy, a prompt without the text the strategy reads, or rows
    that are not stored (naming the ``extraction.prefill_rows`` mode needed).
    """
    if strategy not in QUERY_STRATEGIES:
        raise ValueError(f"unknown query strategy {strategy!r} (known: {', '.join(QUERY_STRATEGIES)})")
    text, instr = text_layout(n_tokens, image_positions)
    what = f"query strategy {strategy!r}"

    def mass(wanted: np.ndarray) -> np.ndarray:
        if row_mass is None:
            raise ValueError(f"{what} needs row_mass (each row's attention on the image)")
        return np.asarray(row_mass, np.float64)[_rows(positions, wanted, what,
                                                      rows_mode(wanted, n_tokens, image_positions))]

    chosen, w = _chosen_rows(strategy, n_tokens, text, instr, mass)
    if len(chosen) == 0:
        raise ValueError(f"{what} finds no text position to read "
                         f"(prompt of {n_tokens} tokens, {len(text)} text, {len(instr)} after the image)")
    out = np.zeros(len(positions))
    out[_rows(positions, chosen, what, rows_mode(chosen, n_tokens, image_positions))] = w
    return out


def query_attention(image_rows: np.ndarray, positions: np.ndarray, image_positions: np.ndarray, n_tokens: int,
                    strategy: str) -> np.ndarray:
    """``a [H, V] = Σ_r w_r · image_rows[:, r, :]`` with ``w`` of :func:`query_weights`; ``image_rows
    [H, R, V]`` is the scoring layer's attention of the stored rows on the vision tokens
    (:func:`image_slice`)."""
    image_rows = np.asarray(image_rows, np.float64)
    w = query_weights(strategy, positions, image_positions, n_tokens, row_mass=image_rows.sum((0, 2)))
    return np.einsum("r,hrv->hv", w, image_rows)


# ------------------------------------------------------------------------------------------- heads
def _distribution(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q [H, V], mass [H])``: each head's image attention renormalised (0 where it has none)."""
    mass = a.sum(-1)
    q = np.divide(a, mass[:, None], out=np.zeros_like(a), where=mass[:, None] > 0)
    return q, mass


def _entropy(a: np.ndarray) -> np.ndarray:
    q, mass = _distribution(a)
    logq = np.log(q, out=np.zeros_like(q), where=q > 0)
    return np.where(mass > 0, -(q * logq).sum(-1), np.inf)


def second_softmax(a: np.ndarray) -> np.ndarray:
    """``p [H, V] = softmax_v(a[h])``: FinePruner's softmax over each head's image attention (which is
    already a slice of softmax outputs)."""
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gini(a: np.ndarray) -> np.ndarray:
    """Gini coefficient of each row of ``a [..., V]`` (non-negative): ``Σ_i Σ_j |a_i − a_j| / (2 V Σ a)``,
    evaluated on the sorted values as ``Σ_i (2i − V − 1) a_(i) / (V Σ a)`` (i = 1 … V ascending);
    0 for a row without mass."""
    a = np.sort(np.asarray(a, np.float64), axis=-1)
    v = a.shape[-1]
    total = a.sum(-1)
    g = ((2 * np.arange(1, v + 1) - v - 1) * a).sum(-1) / np.where(total > 0, v * total, 1.0)
    return np.where(total > 0, g, 0.0)


#: head strategies that select the heads with the lowest statistic
LOWEST_FIRST = ("entropy", "renormalised_entropy")


def head_statistic(image_attention: np.ndarray, strategy: str, *, top_k: int) -> np.ndarray:
    """The per-head statistic ``[H]`` a head strategy ranks heads by (module docstring), from the image
    slice ``image_attention [H, V]``; ``top_k`` is used by ``top_k_sum`` only (capped at V).
    ``all_heads`` ranks nothing: its statistic is the head's image mass."""
    a = np.asarray(image_attention, np.float64)
    if a.ndim != 2:
        raise ValueError(f"image_attention must be [H, V], got shape {a.shape}")
    if strategy in ("sum", "all_heads"):
        return a.sum(-1)
    if strategy == "variance":
        return a.var(-1, ddof=1) if a.shape[-1] > 1 else np.zeros(len(a))
    if strategy == "max_attention":
        return a.max(-1)
    if strategy == "attention_range":
        return a.max(-1) - a.min(-1)
    if strategy == "top_k_sum":
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        k = min(top_k, a.shape[-1])
        return np.sort(a, axis=-1)[:, -k:].sum(-1)
    if strategy in ("entropy", "sparsity", "weighted_quality", "gini_coefficient"):
        p = second_softmax(a)
        if strategy == "entropy":
            return -(p * np.log(p + 1e-8)).sum(-1)
        if strategy == "sparsity":
            return (p ** 2).sum(-1)
        if strategy == "weighted_quality":
            return 0.4 * p.max(-1) + 0.4 * (p ** 2).sum(-1) + 0.2 / ((p > 0.01).sum(-1) + 1e-8)
        return gini(p)
    if strategy == "renormalised_entropy":
        return _entropy(a)
    if strategy == "l2_norm":
        return np.sqrt((a ** 2).sum(-1))
    if strategy == "renormalised_gini":
        return gini(a)
    if strategy == "entropy_peak_mass":
        q, mass = _distribution(a)
        v = a.shape[-1]
        ent = _entropy(a)
        concentration = np.where(mass > 0, 1 - np.divide(ent, np.log(v), out=np.zeros_like(mass),
                                                          where=np.isfinite(ent) & (v > 1)), 0.0)
        return (concentration + q.max(-1) + mass) / 3
    raise ValueError(f"unknown head strategy {strategy!r} (known: {', '.join(HEAD_STRATEGIES)})")


def select_heads(image_attention: np.ndarray, strategy: str, *, n_heads: int, top_k: int) -> np.ndarray:
    """Sorted indices ``[n]`` of the heads a strategy selects: every head for ``all_heads``; otherwise
    the ``n_heads`` heads with the highest :func:`head_statistic` (the lowest for :data:`LOWEST_FIRST`),
    ties broken by the lower head index. Raises ValueError unless 1 ≤ n_heads ≤ H."""
    a = np.asarray(image_attention, np.float64)
    stat = head_statistic(a, strategy, top_k=top_k)
    n_all = a.shape[0]
    if strategy == "all_heads":
        return np.arange(n_all)
    if not 1 <= n_heads <= n_all:
        raise ValueError(f"n_heads must lie in 1 … {n_all} (the number of heads), got {n_heads}")
    key = stat if strategy in LOWEST_FIRST else -stat
    return np.sort(np.argsort(key, kind="stable")[:n_heads])


def head_score(image_attention: np.ndarray, strategy: str, *, n_heads: int, top_k: int) -> np.ndarray:
    """Token score ``[V]`` from the image slice ``[H, V]``: the mean over the heads of :func:`select_heads`."""
    a = np.asarray(image_attention, np.float64)
    return a[select_heads(a, strategy, n_heads=n_heads, top_k=top_k)].mean(0)


def attention_scores(prefill: np.ndarray, positions: np.ndarray, vision_index: np.ndarray,
                     image_positions: np.ndarray, *, prune_layer: int, query: str, head: str, n_heads: int,
                     top_k: int) -> np.ndarray:
    """Token score ``[V]`` for pruning at layer ``prune_layer`` = K: the image slice of layer K − 1's
    stored rows (:func:`image_slice`), the rows combined by the ``query`` strategy
    (:func:`query_attention`), the heads by the ``head`` strategy (:func:`head_score`)."""
    layer = score_layer(prune_layer, np.asarray(prefill).shape[0])
    rows = image_slice(prefill, vision_index, layer=layer)
    a = query_attention(rows, positions, image_positions, np.asarray(prefill).shape[-1], query)
    return head_score(a, head, n_heads=n_heads, top_k=top_k)


# -------------------------------------------------------------------------------- published signals
def fastv(prefill: np.ndarray, positions: np.ndarray, vision_index: np.ndarray, *, prune_layer: int) -> np.ndarray:
    """FastV (Chen et al. 2024, code ``modeling_llama.py`` L740-746): ``s[v] = (1/H) Σ_h A_{K−1}[h, N−1,
    vision_index[v]]`` — layer K − 1's attention (softmax over all causal keys) of the last prompt row,
    averaged over heads, for pruning at layer K; FastV keeps the top ``(1 − R)·V`` (``keep_indices``).
    Needs the row of position N − 1 (stored by every ``extraction.prefill_rows`` mode). ``[V]``."""
    layer = score_layer(prune_layer, np.asarray(prefill).shape[0])
    n = np.asarray(prefill).shape[-1]
    r = _rows(positions, np.array([n - 1]), "fastv", "last")[0]
    return image_slice(prefill, vision_index, layer=layer)[:, r].mean(0)


def pyramiddrop(prefill: np.ndarray, positions: np.ndarray, vision_index: np.ndarray, *,
                prune_layer: int) -> np.ndarray:
    """PyramidDrop (Xing et al. 2024, ``modeling_llama_pdrop.py`` L1390-1401): at a stage boundary ℓ the
    hidden states entering layer ℓ are ranked with **layer ℓ's own** q/k projections and RoPE, query =
    the last instruction token (the last prompt position at inference), softmax over all keys, mean over
    heads; layer ℓ then runs on the kept tokens. So ``s[v] = (1/H) Σ_h A_K[h, N−1, vision_index[v]]``
    for ``prune_layer`` = K = ℓ (0-based, 0 ≤ K < L) — one layer later than FastV's K − 1. Exact for
    the first stage only: a cache of the unpruned model cannot hold later stages' rankings. ``[V]``."""
    n_layers = np.asarray(prefill).shape[0]
    if not 0 <= prune_layer < n_layers:
        raise ValueError(f"prune_layer must lie in 0 … {n_layers - 1} for pyramiddrop, got {prune_layer}")
    n = np.asarray(prefill).shape[-1]
    r = _rows(positions, np.array([n - 1]), "pyramiddrop", "last")[0]
    return image_slice(prefill, vision_index, layer=prune_layer)[:, r].mean(0)


def sparsevlm_raters(vision_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """SparseVLM's raters (``modelling_sparse_llama.py`` L198-204), boolean ``[M]``: with the input
    embeddings ``E_vis [V, D]`` and ``E_txt [M, D]`` of the text after the image,
    ``M_j = (1/V) Σ_v softmax_j(E_vis E_txtᵀ)[v, j]`` (softmax over the text axis) and token j rates
    when ``M_j > mean_j M_j``; when no token exceeds the mean (all equal), every text token rates."""
    ev = np.asarray(vision_embeddings, np.float64)
    et = np.asarray(text_embeddings, np.float64)
    if ev.ndim != 2 or et.ndim != 2 or ev.shape[1] != et.shape[1]:
        raise ValueError(f"vision_embeddings [V, D] and text_embeddings [M, D] must share D, "
                         f"got {ev.shape} and {et.shape}")
    logits = ev @ et.T
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    m = p.mean(0)
    raters = m > m.mean()
    return raters if raters.any() else np.ones(len(m), bool)


def sparsevlm(prefill: np.ndarray, positions: np.ndarray, vision_index: np.ndarray, *, prune_layer: int,
              text_positions: np.ndarray, vision_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """SparseVLM (Zhang et al. 2024, ``score.py`` L27-32): at pruning layer index ℓ the layer's own
    attention is averaged over heads and over the raters' rows, and ℓ's output is pruned, i.e. ``s[v] =
    (1/|J|) Σ_{j ∈ J} (1/H) Σ_h A_{K−1}[h, j, vision_index[v]]`` for ``prune_layer`` = K = ℓ + 1 (FastV's
    convention). The raters J ⊂ ``text_positions [M]`` (the text after the image) come from
    :func:`sparsevlm_raters` on the input embeddings ``vision_embeddings [V, D]``, ``text_embeddings
    [M, D]`` (not in the cache: pass them in). Needs ``extraction.prefill_rows: text_after_image``. ``[V]``.
    Not modelled: v1's recycling of pruned tokens, v2's bias division and head subset."""
    text_positions = np.asarray(text_positions, np.int64)
    if len(text_positions) != len(np.asarray(text_embeddings)):
        raise ValueError(f"text_positions ({len(text_positions)}) and text_embeddings ({len(text_embeddings)}) "
                         "must cover the same tokens")
    if len(np.asarray(vision_embeddings)) != len(vision_index):
        raise ValueError(f"vision_embeddings has {len(vision_embeddings)} rows for {len(vision_index)} vision tokens")
    layer = score_layer(prune_layer, np.asarray(prefill).shape[0])
    raters = text_positions[sparsevlm_raters(vision_embeddings, text_embeddings)]
    r = _rows(positions, raters, "sparsevlm", "text_after_image")
    return image_slice(prefill, vision_index, layer=layer)[:, r].mean((0, 1))


def encoder_cls_scores(cls_attention: np.ndarray, patch_token: np.ndarray, n_vision: int, *, layer: int,
                       heads: str) -> np.ndarray:
    """Vision-encoder CLS→patch attention at encoder layer ``layer`` (``cls_attention [L_enc, H, P]``),
    reduced over heads (``mean`` or ``sum``) and carried onto the LLM's vision tokens: ``s[v] = Σ_{p:
    patch_token[p] = v} c[p]`` (one patch per token for CLIP; patches without a token, −1, are left
    out). ``[n_vision]``. Raises ValueError for an encoder without a CLS token."""
    c = np.asarray(cls_attention, np.float64)
    if c.ndim != 3 or c.shape[-1] == 0:
        raise ValueError("the vision encoder has no CLS token (cls_attention is empty): CLS-attention scores "
                         "(fastervlm, visionzip_dominant) need a CLIP-style encoder such as LLaVA's")
    if heads not in ("mean", "sum"):
        raise ValueError(f"heads must be 'mean' or 'sum', got {heads!r}")
    if not -len(c) <= layer < len(c):
        raise ValueError(f"encoder layer {layer} does not exist: the vision encoder has {len(c)} layers "
                         f"(pruning.encoder_layer)")
    per_patch = c[layer].mean(0) if heads == "mean" else c[layer].sum(0)
    token = np.asarray(patch_token, np.int64)
    if len(token) != len(per_patch):
        raise ValueError(f"patch_token has {len(token)} entries for {len(per_patch)} patches")
    if (token >= n_vision).any():
        raise ValueError(f"patch_token names vision token {int(token.max())}, beyond the {n_vision} vision tokens")
    ok = token >= 0
    return np.bincount(token[ok], weights=per_patch[ok], minlength=n_vision)


def fastervlm(cls_attention: np.ndarray, patch_token: np.ndarray, n_vision: int, *, layer: int = -2) -> np.ndarray:
    """FasterVLM (Zhang et al. 2024, ``clip_encoder.py`` L35-47): ``s[p] = (1/H) Σ_h
    attentions[-2][h, CLS, p]`` — the CLS row of the penultimate encoder layer (the layer whose output
    LLaVA feeds the projector), mean over heads; tokens are kept in their order before the LLM (prune
    layer 0). See :func:`encoder_cls_scores` for the shapes and the patch→token mapping. ``[V]``."""
    return encoder_cls_scores(cls_attention, patch_token, n_vision, layer=layer, heads="mean")


def visionzip_dominant(cls_attention: np.ndarray, patch_token: np.ndarray, n_vision: int, *,
                       layer: int = -2) -> np.ndarray:
    """VisionZip's dominant tokens (Yang et al. 2024, ``clip_encoder.py`` L43-83): ``s[p] = Σ_h
    attentions[-2][h, CLS, p]`` (sum over heads), the top D − 1 patches kept beside the CLS token.
    Not modelled: the contextual tokens merged from the rest. ``[V]`` (see :func:`encoder_cls_scores`)."""
    return encoder_cls_scores(cls_attention, patch_token, n_vision, layer=layer, heads="sum")


# ------------------------------------------------------------------------------------------ baselines
def random_scores(n_vision: int, *, seed: int, draw: int) -> np.ndarray:
    """Uniform random scores ``[V]`` from ``numpy.random.default_rng([seed, draw])``: its top k is a
    uniformly random k-subset, the same for the same (seed, draw), another for another draw."""
    if draw < 0 or seed < 0:
        raise ValueError(f"seed and draw must be non-negative, got seed {seed}, draw {draw}")
    return np.random.default_rng([seed, draw]).random(n_vision)


def grid_subsample(rows: int, cols: int, budget: int) -> np.ndarray:
    """Row-major indices ``[budget]`` (sorted) of a uniform spatial subsample of a ``rows × cols`` grid.

    ``r = round(√(budget · rows / cols))`` lattice rows (clipped to 1 … min(rows, budget), raised until
    ``⌈budget / r⌉ ≤ cols``); lattice row a = 0 … r − 1 holds
    ``c_a = ⌊(a+1)·budget / r⌋ − ⌊a·budget / r⌋`` points (counts differ by at most one, Σ c_a = budget),
    sits on grid row ``⌊(a + ½)·rows / r⌋`` and its points on columns ``⌊(b + ½)·cols / c_a⌋``,
    b = 0 … c_a − 1 (cell centres of an even split).
    A perfect square budget s² on a square grid gives the s × s lattice.
    """
    if not 0 <= budget <= rows * cols:
        raise ValueError(f"budget must lie in 0 … {rows * cols} (the grid's tokens), got {budget}")
    if budget == 0:
        return np.zeros(0, np.int64)
    r = int(min(max(round(math.sqrt(budget * rows / cols)), 1), rows, budget))
    while math.ceil(budget / r) > cols:
        r += 1
    out = []
    for a in range(r):
        c_a = (a + 1) * budget // r - a * budget // r
        row = (2 * a + 1) * rows // (2 * r)
        out.extend(row * cols + (2 * np.arange(c_a) + 1) * cols // (2 * c_a))
    return np.sort(np.asarray(out, np.int64))


def pooling_scores(grids: np.ndarray, budget: int) -> np.ndarray:
    """Pooling baseline ``[V]``: 1 on a uniform spatial subsample of ``budget`` tokens, 0 elsewhere, so
    that ``keep_indices(pooling_scores(g, k), k)`` keeps exactly that subsample. ``grids [I, 2]``
    (rows, cols) per image, tokens row-major image after image; the budget is split over the images in
    proportion to their token counts (largest remainders, ties to the earlier image) and each image is
    subsampled with :func:`grid_subsample`."""
    grids = np.asarray(grids, np.int64).reshape(-1, 2)
    sizes = grids.prod(1)
    total = int(sizes.sum())
    if not 0 <= budget <= total:
        raise ValueError(f"budget must lie in 0 … {total} (the vision tokens), got {budget}")
    exact = budget * sizes / total
    share = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - share), kind="stable")
    share[order[: budget - int(share.sum())]] += 1
    score = np.zeros(total)
    start = 0
    for (rows, cols), n, k in zip(grids, sizes, share, strict=True):
        score[start + grid_subsample(int(rows), int(cols), int(k))] = 1.0
        start += n
    return score


# ------------------------------------------------------------------------------------------ keeping
def keep_indices(score: np.ndarray, budget: int) -> np.ndarray:
    """Sorted indices ``[budget]`` of the kept tokens: the ``budget`` highest scores, ties broken by the
    lower index. Raises ValueError for a budget outside 0 … V or a NaN score."""
    score = np.asarray(score, np.float64)
    if not 0 <= budget <= len(score):
        raise ValueError(f"budget must lie in 0 … {len(score)} (the vision tokens), got {budget}")
    if np.isnan(score).any():
        raise ValueError(f"score holds {int(np.isnan(score).sum())} NaN values")
    return np.sort(np.argsort(-score, kind="stable")[:budget])
