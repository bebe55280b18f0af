"""Extraction: the model run over each shard's samples into the per-sample HDF5 cache (:mod:`.jobs`);
the engine it drives is :mod:`vlmattn.engine.inference`, :mod:`vlmattn.engine.capture` and
:mod:`vlmattn.engine.vision`."""
