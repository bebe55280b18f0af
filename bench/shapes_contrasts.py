"""Contrast analyses of a few pairs at real attention shapes, one thread (``bench/scale.py --shapes``).

Usage: ``python bench/shapes_contrasts.py llava-1.5-7b 4 heads divergence``: the analyses of 4 pairs of
synthetic samples with the default config's ``triangle_topleft`` options (``heads``: 999 resamples).
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scale import SHAPES, synthetic_sample  # noqa: E402
from vlmattn.contrasts.analyses import run  # noqa: E402
from vlmattn.contrasts.options import contrast_options  # noqa: E402
from vlmattn.store import write_sample  # noqa: E402
from vlmattn.workflow import load_config  # noqa: E402

shape, pairs, analyses = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
options = contrast_options(load_config(yaml.safe_load((REPO / "config.yaml").read_text()), base_dir=str(REPO)),
                           "triangle_topleft")
tmp = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
files = {"a": [], "b": []}
for i in range(pairs):
    for side, out in files.items():
        f = tmp / f"{side}{i}.h5"
        write_sample(f, synthetic_sample(rng, f"{side}{i}", "q", size=336, shape=SHAPES[shape]))
        out.append(str(f))
for analysis in analyses:
    t = time.perf_counter()
    tables = run(analysis, files["a"], files["b"], options)
    sec = time.perf_counter() - t
    rows = ", ".join(f"{k} {len(v)} rows" for k, v in tables.items())
    print(f"{shape}: contrast {analysis}, {pairs} pairs: {sec:.2f} s ({sec / pairs:.2f} s per pair); {rows}")
