"""Paired contrasts between two conditions (A and B) of the same scenes, per (layer, head) of the
language model or per layer of the vision encoder.

* :mod:`.stats` — paired bootstrap interval, sign-flip test, Benjamini–Hochberg, d_z, contrast table;
* :mod:`.maps` — one step-pooled map per (layer, head) of a sample, ROI boxes, sink masks, pairing;
* :mod:`.heads` — ROI mass per (layer, head) and its A − B contrast table;
* :mod:`.quadrants` — quadrant distributions and their A − B shift;
* :mod:`.divergence` — KL, Jensen–Shannon and Hausdorff distances between A's and B's maps, and the
  same between two different B samples (within-condition reference);
* :mod:`.summary` — mean divergence per layer with a bootstrap interval, against that reference;
* :mod:`.encoder` — the vision encoder's maps per encoder layer: ROI mass contrast and divergences;
* :mod:`.rollout` — ROI mass of the rollout maps (:mod:`vlmattn.rollout`) per form and its A − B contrast;
* :mod:`.ablation` — causal check of ranked heads: answer log-prob with the top-k heads ablated
  against random k-head sets (runs the model);
* :mod:`.analyses` — the analyses the workflow runs, their options and tables;
* :mod:`.plots` — the contrast figures.

The pairs of a configured contrast come from :func:`vlmattn.contrasts.options.contrast_pairs`.
"""
