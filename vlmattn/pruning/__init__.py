"""Visual-token pruning: which vision tokens to keep, scored from cached attention, and runs of the
model with the others removed or masked.

* :mod:`.scorers` — importance scores over the vision tokens: head- and query-selection strategies,
  the published signals (FastV, PyramidDrop, SparseVLM, FasterVLM, VisionZip), random and pooling
  baselines, and the kept set of a budget;
* :mod:`.flops` — FastV's per-layer FLOPs and the fraction kept by pruning at layer K;
* :mod:`.offline` — budgets, and per scorer and budget the recall of object tokens and the reference
  attention the kept tokens retain;
* :mod:`.online` — greedy generation with the vision tokens outside the kept set dropped from layer K
  on (removed from the sequence and the KV cache) or masked as keys;
* :mod:`.evalset` — a held-out evaluation set of the synthetic shapes task;
* :mod:`.evaluate` — per question, every scorer and budget run online, answers checked against the
  truth and the unpruned model;
* :mod:`.stats` — accuracy with Wilson intervals, agreement and exact McNemar tests against the
  unpruned model (BH over scorers), the ablation tables and rankings.
"""
