"""vlmattn: measure where vision-language models look.

The public entry points are :func:`vlmattn.store.read_sample` (open one cached HDF5 sample),
:mod:`vlmattn.metrics` (the metric registry) and :func:`vlmattn.workflow.load_config`.
"""

__version__ = "0.1.0"
