"""The engine: running a model and capturing its attention, shared by every wing.

* :mod:`.adapters` — one adapter per model family (prompt layout, vision-token boxes, encoder modules);
* :mod:`.processors` — loading a family's processor;
* :mod:`.inference` — loading a model, building its inputs, generation with capture;
* :mod:`.capture` — the language model's attention function and the hooks that intervene in it
  (recorders, rollout, head ablation, kept attention, observers, key biases), passed in per call;
* :mod:`.vision` — the vision tower's attention function and its recorder;
* :mod:`.pruned` — generation with vision tokens dropped or masked from a decoder layer on.

The attention functions are registered with transformers on first use (:func:`.inference.load_model`),
not on import.
"""
