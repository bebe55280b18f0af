"""Seconds of the pruning and contrast analyses on samples of real attention shapes, on one thread.

For ``--shapes llava-1.5-7b`` (or ``qwen2.5-vl-7b``, ``toy``; :data:`bench.scale.SHAPES`) it writes
synthetic samples (:func:`bench.scale.synthetic_sample`, completed with what the default extraction
stores and that generator leaves out: prefill rows of every text token (``prefill_rows: all_text``)
at decoder layers K − 1 and K, the language-model rollout and the vision encoder's summaries) to
HDF5 files in a temporary folder through :func:`vlmattn.store.write_sample`, then times the
library's own job functions in a fresh process with one BLAS/OpenMP thread:

* ``pruning_offline``: :func:`vlmattn.pruning.jobs.offline_shard` on a shard of 3 samples (seconds per
  sample), options of :func:`vlmattn.pruning.options.offline_options` from the default
  ``config.yaml`` with the 7B settings the config's comment gives (``prune_layer: 2``, ``n_heads: 4``,
  ``extraction.prefill_layers: [1, 2]``; budgets 192 / 128 / 64 of 576 scaled to the model's V — the
  schema's default, which the toy config scales to its 64 tokens);
* ``contrast_heads``, ``contrast_divergence``, ``contrast_encoder``: :func:`vlmattn.contrasts.jobs.contrast`
  of contrast ``triangle_topleft`` (roi top_left, ``statistics: {n_resamples: 999}``), options of
  :func:`vlmattn.contrasts.options.contrast_options` sliced by
  :func:`vlmattn.contrasts.analyses.analysis_options`, as ``rules/contrasts.smk`` builds them; timed at
  2 and 4 pairs, reported as a fixed cost plus seconds per pair (the straight line through both).

Vision encoder: LLaVA-1.5's CLIP-ViT-L/14-336 (24 layers × 16 heads, 24 × 24 patches + CLS, one
patch per LLM vision token); Qwen2.5-VL-7B's tower (32 layers × 16 heads, 32 × 32 patches of a
448-px image, no CLS, 2 × 2 patches merged into each of the 16 × 16 LLM tokens, windowed layers
but 7, 15, 23, 31). Attention values are Dirichlet draws: the timings do not depend on them.

Usage: ``PYTHONPATH=. python bench/analyses_at_shapes.py --shapes llava-1.5-7b``
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CONTRAST = "triangle_topleft"
PRUNE_SAMPLES = 3
PAIRS = (2, 4)
#: vision towers per shape: layers, heads, patch grid (rows = cols), CLS, patches merged per token side,
#: image side in pixels, full-attention layers (the others windowed, ``window`` patches a side) or None
ENCODERS = {
    "toy": (2, 4, 8, False, 1, 16, None, 0),
    "llava-1.5-7b": (24, 16, 24, True, 1, 336, None, 0),
    "qwen2.5-vl-7b": (32, 16, 32, False, 2, 448, (7, 15, 23, 31), 8),
}


# ------------------------------------------------------------------------------------ the samples
def _vision_encoder(rng, shape_name: str):
    import numpy as np

    from vlmattn.store import VisionEncoderAttention

    layers, heads, grid, cls, merge, size, full_layers, window = ENCODERS[shape_name]
    p = grid * grid
    t = p + int(cls)
    r, c = np.divmod(np.arange(p), grid)
    cell = size / grid
    boxes = np.stack([c * cell, r * cell, (c + 1) * cell, (r + 1) * cell], 1).astype(np.float32)
    token = (r // merge) * (grid // merge) + c // merge
    # received: the mean over the T query rows of a column, drawn as one distribution over the T keys
    received = rng.dirichlet(np.full(t, 0.3), size=(layers, heads)).astype(np.float32)[..., t - p:]
    cls_rows = (rng.dirichlet(np.full(t, 0.3), size=(layers, heads)).astype(np.float32)[..., 1:] if cls
                else received[..., :0])
    roll = rng.dirichlet(np.full(t, 0.3), size=(layers,)).astype(np.float32)[..., t - p:]
    roll_cls = rng.dirichlet(np.full(t, 0.3), size=(layers,)).astype(np.float32)[..., 1:] if cls else roll[:, :0]
    segment = np.zeros((layers, p), np.int32)
    if full_layers is not None:
        windows = (r // window) * (grid // window) + c // window
        for layer in range(layers):
            if layer not in full_layers:
                segment[layer] = windows
    return VisionEncoderAttention(
        patch_grid=np.array([[grid, grid]]), patch_spans=np.array([[0, p]]), patch_boxes=boxes,
        patch_token=token.astype(np.int64), received=received, cls_attention=cls_rows,
        rollout_received=roll, rollout_cls=roll_cls, segment=segment, has_cls=cls)


def make_sample(rng, shape_name: str, image_id: str, question: str, prefill_layers: list[int]):
    """:func:`bench.scale.synthetic_sample` of ``shape_name`` with what the default extraction stores
    besides: prefill rows of every text token at ``prefill_layers`` (causal Dirichlet rows), the LLM
    rollout and the vision encoder's summaries."""
    from dataclasses import replace

    import numpy as np

    from bench.scale import SHAPES, synthetic_sample

    size = ENCODERS[shape_name][5]
    s = synthetic_sample(rng, image_id, question, size=size, shape=SHAPES[shape_name])
    n = len(s.input_ids)
    heads = s.n_heads
    positions = np.setdiff1d(np.arange(n), s.vision_index)  # extraction.prefill_rows: all_text
    prefill = np.zeros((len(prefill_layers), heads, len(positions), n), np.float32)
    for i, q in enumerate(positions):
        prefill[:, :, i, : q + 1] = rng.dirichlet(np.full(q + 1, 0.3), size=(len(prefill_layers), heads))
    steps = s.n_steps
    rollout_decode = np.zeros((steps, n + steps - 1), np.float32)
    for t in range(steps):
        rollout_decode[t, : n + t] = rng.dirichlet(np.full(n + t, 0.3))
    rollout_prefill = np.zeros((len(positions), n), np.float32)
    for i, q in enumerate(positions):
        rollout_prefill[i, : q + 1] = rng.dirichlet(np.full(q + 1, 0.3))
    return replace(s, prefill=prefill, prefill_positions=positions.astype(np.int64),
                   prefill_layers=np.asarray(prefill_layers, np.int64), rollout_decode=rollout_decode,
                   rollout_prefill=rollout_prefill, vision_encoder=_vision_encoder(rng, shape_name))


# ------------------------------------------------------------------------------------ the worker
def _config(shape_name: str) -> dict:
    """The default ``config.yaml`` validated, with the 7B pruning settings (prune layer 2, 4 heads,
    prefill layers 1 and 2) unless ``shape_name`` is the toy model's."""
    import yaml

    from vlmattn.workflow import load_config

    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    if shape_name != "toy":
        raw["pruning"]["prune_layer"] = 2
        raw["pruning"]["n_heads"] = 4
        raw["extraction"]["prefill_layers"] = [1, 2]
    return load_config(raw, base_dir=REPO)


def _rows(path) -> int:
    import pandas as pd

    return len(pd.read_csv(path))


def worker(shape_name: str, tmp: Path) -> list[tuple[str, float, str]]:
    import numpy as np
    import pandas as pd

    from vlmattn.contrasts.analyses import TABLES, analysis_options
    from vlmattn.contrasts.jobs import contrast
    from vlmattn.contrasts.options import contrast_options
    from vlmattn.pruning.jobs import offline_shard
    from vlmattn.pruning.options import offline_options
    from vlmattn.store import write_sample
    from vlmattn.tables import INDEX_COLUMNS, write_table

    # the modules the jobs import lazily (scipy.stats alone takes about 2 s): imported before the clocks
    t0 = time.perf_counter()
    for name in ("vlmattn.pruning.offline", "vlmattn.contrasts.heads", "vlmattn.contrasts.divergence",
                 "vlmattn.contrasts.encoder", "vlmattn.contrasts.summary", "scipy.stats", "scipy.spatial"):
        importlib.import_module(name)
    import_s = time.perf_counter() - t0
    cfg = _config(shape_name)
    ex = cfg["extraction"]
    popts = offline_options(cfg)
    k = popts["prune_layer"]
    rng = np.random.default_rng(0)
    n_pairs = max(PAIRS)
    files_a, files_b = [], []
    t0 = time.perf_counter()
    for i in range(n_pairs):
        for cond, files in (("triangle_topleft", files_a), ("square_only", files_b)):
            s = make_sample(rng, shape_name, f"{cond}_{i}", "top_left", [k - 1, k])
            path = tmp / f"{cond}_{i}.h5"
            write_sample(path, s, attention_dtype=ex["attention_dtype"], compression=ex["compression"],
                         layout=ex["layout"])
            files.append(str(path))
    write_s = time.perf_counter() - t0
    mb = os.path.getsize(files_a[0]) / 1e6
    rows = []

    # pruning offline: one shard of PRUNE_SAMPLES samples
    members = (files_a + files_b)[:PRUNE_SAMPLES]
    index = tmp / "shard.csv"
    write_table(pd.DataFrame([["m", Path(f).stem, "top_left", f, "bench", 0, 0, "yes"] for f in members],
                             columns=INDEX_COLUMNS), index)
    out = tmp / "pruning_offline.csv"
    t0 = time.perf_counter()
    offline_shard(str(index), popts, str(out))
    sec = (time.perf_counter() - t0) / PRUNE_SAMPLES
    table = pd.read_csv(out)
    budgets = sorted({int(b) for b in table["budget"]}, reverse=True)
    settings = "toy settings" if shape_name == "toy" else "7B settings (not config.yaml's toy ones)"
    rows.append(("pruning_offline", sec,
                 f"s/sample (shard of {PRUNE_SAMPLES}); {len(table) // PRUNE_SAMPLES} rows/sample; {settings}: "
                 f"K={k}, n_heads={popts['scores']['n_heads']}, kept {budgets} of {int(table['n_vision'].iloc[0])} "
                 f"(192/128/64 of 576 scaled to V)"))

    # contrasts: each analysis at 2 and 4 pairs, a straight line through both
    copts = contrast_options(cfg, CONTRAST)
    for analysis in ("heads", "divergence", "encoder"):
        opts = analysis_options(copts, analysis)
        secs = {}
        for p in PAIRS:
            outs = [str(tmp / f"{analysis}_{p}_{t}.csv") for t in TABLES[analysis]]
            t0 = time.perf_counter()
            contrast(analysis, files_a[:p], files_b[:p], opts, {"contrast": CONTRAST, "model": "m"}, outs)
            secs[p] = time.perf_counter() - t0
        lo, hi = PAIRS
        per_pair = (secs[hi] - secs[lo]) / (hi - lo)
        fixed = secs[hi] - hi * per_pair
        counts = ", ".join(f"{t} {_rows(tmp / f'{analysis}_{hi}_{t}.csv')}" for t in TABLES[analysis])
        extra = f"n_resamples {opts['statistics']['n_resamples']}; " if "statistics" in opts else ""
        rows.append((f"contrast_{analysis}", secs[hi] / hi,
                     f"s/pair at {hi} pairs ({secs[lo]:.2f} s at {lo}, {secs[hi]:.2f} s at {hi}: fixed "
                     f"{fixed:.2f} s + {per_pair:.2f} s/pair); {extra}rows: {counts}"))
    rows.append(("(imports)", import_s, "s once per job process, not in the rows above"))
    rows.append(("(write_sample)", write_s / (2 * n_pairs), f"s/sample to generate + write; cache file {mb:.1f} MB"))
    return rows


def measure(shape_name: str) -> list[tuple[str, float, str]]:
    """Rows ``(analysis, seconds, note)`` of the analyses on samples of ``shape_name``'s shapes
    (module docstring), measured in a fresh process with one BLAS/OpenMP thread (interpreter start and
    imports not counted)."""
    import tempfile

    if shape_name not in ENCODERS:
        raise ValueError(f"unknown shapes {shape_name!r} (known: {', '.join(ENCODERS)})")
    env = {**os.environ, **{v: "1" for v in THREAD_VARS},
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    with tempfile.TemporaryDirectory(prefix="vlmattn-shapes-") as tmp:
        done = subprocess.run([sys.executable, __file__, "--worker", shape_name, "--tmp", tmp], env=env,
                              capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"worker for {shape_name} failed:\n{done.stderr[-3000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("ROWS "))
    return [tuple(r) for r in json.loads(line[5:])]


def print_rows(shape_name: str, rows) -> None:
    print(f"{shape_name}: one thread")
    print(f"{'analysis':22s} {'seconds':>8s}  note")
    for name, sec, note in rows:
        print(f"{name:22s} {sec:8.2f}  {note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="llava-1.5-7b", help="comma-separated: " + ", ".join(ENCODERS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        rows = worker(args.worker, Path(args.tmp))
        print("ROWS " + json.dumps(rows), flush=True)
        return
    for i, name in enumerate(args.shapes.split(",")):
        if i:
            print()
        print_rows(name, measure(name))


if __name__ == "__main__":
    main()
