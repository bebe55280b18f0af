"""Paired contrasts between two conditions (A and B) of the same scenes, per (layer, head).

* :mod:`.stats` — paired bootstrap interval, sign-flip test, Benjamini–Hochberg, d_z, contrast table;
* :mod:`.maps` — one step-pooled map per (layer, head) of a sample, ROI boxes, sink masks, pairing;
* :mod:`.heads` — ROI mass per (layer, head) and its A − B contrast table;
* :mod:`.quadrants` — quadrant distributions and their A − B shift;
* :mod:`.divergence` — KL, Jensen–Shannon and Hausdorff distances between A's and B's maps;
* :mod:`.rollout` — ROI mass of the rollout maps (:mod:`vlmattn.rollout`) per form and its A − B contrast;
* :mod:`.ablation` — causal check of ranked heads: answer log-prob with the top-k heads ablated
  against random k-head sets (runs the model).

The pairs of a configured contrast come from :func:`vlmattn.config.contrast_pairs`.
"""
