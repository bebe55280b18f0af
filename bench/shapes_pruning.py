"""pruning_offline's work per sample at real attention shapes, one thread (``bench/scale.py --shapes``).

Usage: ``python bench/shapes_pruning.py llava-1.5-7b``. LLaVA-1.5-7B's settings: prune layer 2, 4
heads, budgets 192 / 128 / 64 (of 576, scaled to the model's vision tokens); the synthetic sample gets
prefill rows of every text position (Dirichlet, causal), as ``extraction.prefill_rows: all_text``.
"""

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scale import SHAPES, synthetic_sample  # noqa: E402
from vlmattn.pruning import offline  # noqa: E402
from vlmattn.pruning.jobs import model_budgets  # noqa: E402
from vlmattn.pruning.options import offline_options  # noqa: E402
from vlmattn.workflow import load_config  # noqa: E402

shape = sys.argv[1]
raw = yaml.safe_load((REPO / "config.yaml").read_text())
raw["pruning"].update(prune_layer=2, n_heads=4)
raw["extraction"]["prefill_layers"] = [1, 2]
o = offline_options(load_config(raw, base_dir=str(REPO)))
o["budgets"] = {**o["budgets"], "budgets": [192, 128, 64], "keep_ratios": []}
s = synthetic_sample(np.random.default_rng(0), "img", "q", size=336, shape=SHAPES[shape])
n = len(s.input_ids)
v0, v1 = s.spans[0]
pos = np.array([i for i in range(n) if not v0 <= i < v1])
rng = np.random.default_rng(1)
pre = np.zeros((s.n_layers, s.n_heads, len(pos), n), np.float32)
for j, q in enumerate(pos):
    pre[:, :, j, : q + 1] = rng.dirichlet(np.full(q + 1, 0.3), size=(s.n_layers, s.n_heads))
s = dataclasses.replace(s, prefill=pre, prefill_positions=pos)
t = time.perf_counter()
for _ in range(2):
    scores = offline.sample_scores(s, prune_layer=o["prune_layer"], **o["scores"])
    budgets = model_budgets(len(s.vision_index), o, s.n_layers, "m")
    table = offline.offline_table(s, scores, budgets, prune_layer=o["prune_layer"], step=o["step"], pooling=True)
sec = (time.perf_counter() - t) / 2
print(f"{shape}: pruning_offline {sec:.2f} s per sample, {len(table)} rows, budgets {[int(b) for b in budgets]}")
