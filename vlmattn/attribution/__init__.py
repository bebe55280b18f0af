"""Beyond raw attention: gradient attributions, cross-modal alignment, the modality gap, and faithfulness
curves that rank every map on the same samples.

* :mod:`.gradients` — attention × gradient and its rollout through the project's attention function,
  integrated gradients and saliency of the vision-token embeddings through captum;
* :mod:`.alignment` — cosine maps of vision tokens against the answer token, Spearman against attention,
  agreement with the boxes;
* :mod:`.modality_gap` — centroid distance and linear separability of vision and text hidden states;
* :mod:`.faithfulness` — deletion and insertion curves through the pruning harness, areas, ranking with
  bootstrap intervals;
* :mod:`.sample` — every map of one sample and its HDF5 file; :mod:`.jobs` and :mod:`.plots` — the
  workflow's jobs (rules/attribution.smk) and figures.
"""
