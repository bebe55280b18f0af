"""Validation: the default run checked against the ground truth its toy model was trained on
(:mod:`.checks`), and the report's overview figure (:mod:`.plots`)."""
