"""How the workflow scales with the number of samples: the job graph, and the metric stage.

Writes, for each N, a synthetic dataset in a fresh folder: ``N / 2`` distinct PNG images × 2
questions listed in a sample sheet (``data/sheet.tsv``), and a config with one model (a checkpoint
path that is never loaded) and the 10 default metrics. Then, in one run:

1. ``snakemake -n`` of the whole workflow at N = 100, 1,000 and 10,000 (``--sizes``): jobs planned,
   wall time and peak RSS (``ru_maxrss`` of a fresh subprocess tree);
2. at N = 1,000 (``--stage-size``), the **metric stage**: one HDF5 cache file per sample with
   synthetic attention written through the library's own writer (``vlmattn.store.write_sample``;
   shapes of the default toy model: 2 layers × 4 heads, 64 vision tokens, 6 new tokens) and the
   shard indexes an extraction leaves, then ``snakemake --cores C`` of every metric's summary (metric
   jobs per (metric, shard) writing ``results/tables/{metric}/{model}/{shard}.parquet``, then the
   summary ``results/summaries/{metric}.csv``), against the in-process baseline: one Python process
   reads every HDF5 file once and computes every default metric, writing the same rows to one Parquet
   file per metric and its summary; it runs with the libraries' default threads (all cores) and
   with one thread (as Snakemake gives a one-thread job), and the faster of the two is the reference.

Shards: ``max(4, ⌈N / 500⌉)`` unless ``--shards`` is given, as the README suggests for a dataset.
Targets: N = 10,000 → ≤ 1,000 jobs, ``-n`` ≤ 20 s and ≤ 500 MB; metric stage at
N = 1,000 ≤ 2× the baseline's wall time. The rows of both are compared cell for cell, the summaries
within their 8 significant digits (the shards are merged in another order).

Usage: ``PYTHONPATH=. python bench/scale.py [--sizes 100,1000,10000] [--stage-size 1000] [--cores 2]``;
``--shapes llava-1.5-7b`` (or ``qwen2.5-vl-7b``, ``toy``) instead measures one sample of those
attention shapes: seconds, rows, Parquet and CSV bytes per metric of ``--config`` (default
``config.yaml``) on one thread; with ``--summaries N``, then the summary and plot jobs of every metric
at N samples of those shapes (wall time, peak RSS; the shard files are written from the one sample's
table, :func:`synthetic_shards`). Targets at LLaVA-1.5-7B shapes with ``configs/llava-1.5-7b.yaml``:
≤ 5 s and ≤ 3 MB of tables per sample; at N = 10,000, each summary and plot job ≤ 2 GB and ≤ 10 min.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ("What shape is in the image?", "Is there anything in the top left corner?")
# the default toy model's shapes: layers, heads, vision grid, text tokens around the image, new tokens
LAYERS, HEADS, GRID, TEXT_BEFORE, TEXT_AFTER, STEPS = 2, 4, 8, 5, 14, 6
RSS_WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def shard_count(n: int, given: int | None) -> int:
    return given or max(4, math.ceil(n / 500))


def write_dataset(wd: Path, n: int, shards: int) -> dict:
    """Images, sheet and config of an ``n``-sample dataset in ``wd``; returns the config."""
    from PIL import Image

    data = wd / "data"
    (data / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_images = n // len(QUESTIONS)
    lines = ["image\tquestion\texpected"]
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / "img" / f"im{i:05d}.png")
        lines += [f"img/im{i:05d}.png\t{q}\t{'yes' if i % 2 else 'no'}" for q in QUESTIONS]
    (data / "sheet.tsv").write_text("\n".join(lines) + "\n")
    cfg = {
        "images": {"synthetic": {"scenes": []}},
        "questions": {"q": {"text": "unused", "images": []}},
        "sheets": [{"path": "data/sheet.tsv"}],
        "models": {"m": {"family": "llava", "path": "checkpoints/never-loaded"}},
        "shards": shards,
        "metrics": {m: {} for m in default_metrics()},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def default_metrics() -> list[str]:
    return list(yaml.safe_load((REPO / "config.yaml").read_text())["metrics"])


#: attention shapes of real models for ``--shapes``: layers, query heads, vision grid (rows = cols),
#: text tokens before and after the image, generated tokens (LLaVA-1.5-7B: 576 vision tokens, a
#: 35-token system prompt and a 15-token question; Qwen2.5-VL-7B: 28 × 28 heads, a 448-px image →
#: 16 × 16 merged tokens)
SHAPES = {"toy": (LAYERS, HEADS, GRID, TEXT_BEFORE, TEXT_AFTER, STEPS),
          "llava-1.5-7b": (32, 32, 24, 35, 15, 32),
          "qwen2.5-vl-7b": (28, 28, 16, 15, 15, 32)}


def synthetic_sample(rng: np.random.Generator, image_id: str, question: str, size: int = 16,
                     shape: tuple[int, int, int, int, int, int] = SHAPES["toy"]):
    """An :class:`AttentionSample` of ``shape`` (:data:`SHAPES`; the default toy model's by default)
    with Dirichlet attention rows (causal: row t spans N + t keys) and one ground-truth box."""
    from vlmattn.store import AttentionSample

    layers, heads, grid, before, after, steps = shape
    v = grid * grid
    n = before + v + after
    decode = np.zeros((steps, layers, heads, n + steps - 1), np.float32)
    for t in range(steps):
        decode[t, :, :, : n + t] = rng.dirichlet(np.full(n + t, 0.3), size=(layers, heads))
    r, c = np.divmod(np.arange(v), grid)
    cell = size / grid
    boxes = np.stack([c * cell, r * cell, (c + 1) * cell, (r + 1) * cell], 1).astype(np.float32)
    x0, y0 = rng.uniform(0, size / 2, 2)
    return AttentionSample(
        input_ids=np.arange(n), input_tokens=["t"] * before + ["<image>"] * v + ["q"] * after,
        generated_ids=np.arange(steps), generated_tokens=[f"w{t}" for t in range(steps)],
        spans=np.array([[before, before + v]]), grid=np.array([[grid, grid]]), token_boxes=boxes,
        image_size=np.array([size, size]), decode=decode, decode_key_len=n + np.arange(steps),
        prefill=decode[0][:, :, None, :n], prefill_positions=np.array([n - 1]),
        attrs={"image_id": image_id, "question_id": question, "generated_text": "yes"},
        boxes=np.array([[x0, y0, x0 + size / 4, y0 + size / 4]], np.float32), labels=["thing"], colours=[""],
    )


def write_caches(wd: Path, cfg: dict) -> list[str]:
    """One HDF5 file per sample and the shard indexes, as the extraction jobs would leave them."""
    import pandas as pd

    from vlmattn.config import load_dataset, shard_samples
    from vlmattn.store import write_sample
    from vlmattn.tables import INDEX_COLUMNS, write_table
    from vlmattn.workflow import load_config

    cfg = load_config(cfg, base_dir=wd)
    data = load_dataset(cfg, base_dir=wd)
    rng = np.random.default_rng(1)
    files = []
    for model, by_shard in shard_samples(data.samples, cfg["shards"]).items():
        for shard, members in by_shard.items():
            rows = []
            for s in members:
                path = wd / "results" / "attention" / model / f"{s.name}.h5"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_sample(path, synthetic_sample(rng, s.image, s.question))
                rel = str(path.relative_to(wd))
                files.append(rel)
                rows.append([model, s.image, s.question, rel, "bench", 0, STEPS, "yes"])
            write_table(pd.DataFrame(rows, columns=INDEX_COLUMNS),
                        wd / "results/attention" / model / "shards" / f"{shard}.csv")
    return files


def snakemake(wd: Path, *args: str) -> tuple[float, int, str]:
    """Run snakemake in ``wd`` in a fresh process tree: (wall s, peak RSS KiB, output)."""
    cmd = [sys.executable, "-c", RSS_WRAPPER, sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(wd), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    out = done.stdout + done.stderr
    if done.returncode:
        sys.exit(f"snakemake {' '.join(args)} failed in {wd}:\n{out[-3000:]}")
    rss = int(re.search(r"PEAK_RSS_KB (\d+)", out).group(1))
    return wall, rss, out


def planned(out: str) -> int:
    m = re.search(r"^total\s+(\d+)\s*$", out, re.M)
    return int(m.group(1)) if m else 0


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def baseline(wd: Path, cfg: dict, files: list[str], out_dir: Path, threads: int | None) -> float:
    """Wall time of one process reading every cache file once and computing every metric, with
    ``threads`` BLAS/OpenMP threads (None: the libraries' default, every core)."""
    code = f"""
from pathlib import Path
from vlmattn.workflow import load_config
from vlmattn.tables import write_parquet
from vlmattn.metrics import compute_table, get_metric
from vlmattn.metrics.options import metric_params
from vlmattn.store import read_sample
from vlmattn.summaries import summarise_files, write_summary
cfg = load_config({cfg!r}, base_dir={str(wd)!r})
metrics = list(cfg["metrics"])
params = {{m: metric_params(m, cfg["metrics"]) for m in metrics}}
frames = {{m: [] for m in metrics}}
for f in sorted({files!r}):
    s = read_sample(Path({str(wd)!r}) / f)
    ids = {{"model": "m", "image": s.attrs["image_id"], "question": s.attrs["question_id"]}}
    for m in metrics:
        frames[m].append(compute_table(m, s, params[m], ids))
out = Path({str(out_dir)!r})
out.mkdir(parents=True, exist_ok=True)
for m in metrics:
    write_parquet(frames[m], out / f"{{m}}.parquet")
    mod = get_metric(m)
    write_summary(summarise_files([str(out / f"{{m}}.parquet")], mod.SUMMARY_KEYS, getattr(mod, "SUMMARY_SKIP", ())),
                  out / f"{{m}}.csv")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if threads:
        env.update({v: str(threads) for v in THREAD_VARS})
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=wd)
    if done.returncode:
        sys.exit(f"baseline failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def same_tables(results: Path, b: Path, metrics: list[str]) -> bool:
    """Every metric's dataset (``results/tables/{metric}/``) equals the baseline's file after sorting rows
    (the baseline reads in file order), and its summary equals the baseline's within the CSV's 8
    significant digits (rtol 1e-7: the shards are merged in another order, which moves the last bits)."""
    import pandas as pd

    for m in metrics:
        x = pd.read_parquet(results / "tables" / m).astype(str)
        y = pd.read_parquet(b / f"{m}.parquet").astype(str)
        if len(x) != len(y) or list(x.columns) != list(y.columns):
            return False
        if not x.sort_values(list(x.columns)).reset_index(drop=True).equals(
                y.sort_values(list(y.columns)).reset_index(drop=True)):
            return False
        sx, sy = pd.read_csv(results / "summaries" / f"{m}.csv"), pd.read_csv(b / f"{m}.csv")
        num = [c for c in ("n", "mean", "sd", "ci_low", "ci_high") if c in sx]
        keys = [c for c in sx.columns if c not in num]
        # groups come in order of first appearance, which depends on the order the samples are read in
        sx, sy = (d.assign(_k=d[keys].astype(object).where(d[keys].notna(), "<NA>").astype(str)
                           .agg("|".join, axis=1)).sort_values("_k", kind="stable") for d in (sx, sy))
        if list(sx["_k"]) != list(sy["_k"]):
            return False
        if sx.shape != sy.shape or not np.allclose(sx[num].to_numpy(float), sy[num].to_numpy(float), rtol=1e-7,
                                                   atol=1e-12, equal_nan=True):
            return False
    return True


def print_sizes(rows, cores: int) -> None:
    print(f"\nvlmattn scale bench: {os.cpu_count()} CPUs visible, {cores} cores for the metric stage\n")
    print(f"{'samples':>8s} {'shards':>6s} {'jobs planned':>12s} {'-n wall s':>9s} {'-n peak RSS MiB':>15s}")
    for n, shards, jobs_planned, wall, rss in rows:
        print(f"{n:8d} {shards:6d} {jobs_planned:12d} {wall:9.1f} {rss:15.0f}")


def per_sample(shape_name: str, config: Path, out_dir: Path | None = None, threads: int = 1) -> list[list[str]]:
    """Per metric of ``config``, on one sample of ``shape_name``'s attention shapes written and read
    through the store (in a fresh process with ``threads`` BLAS/OpenMP threads): seconds of
    :func:`vlmattn.metrics.compute_table` (after one call on a toy-shaped sample, so that the libraries'
    imports, paid once per job, are not counted), rows, bytes of the Parquet shard file the job writes,
    and bytes of the same rows as CSV (``%.8g``, the former format). With ``out_dir``, each metric's
    one-sample Parquet file is kept there (``{metric}.parquet``)."""
    code = f"""
import io, sys, tempfile, time
from pathlib import Path
import numpy as np
sys.path.insert(0, {str(REPO)!r})
from bench.scale import SHAPES, synthetic_sample
from vlmattn.metrics import compute_table
from vlmattn.metrics.options import metric_params
from vlmattn.store import read_sample, write_sample
from vlmattn.tables import write_parquet, write_table
from vlmattn.workflow import load_config
import yaml
cfg = load_config(yaml.safe_load(Path({str(config)!r}).read_text()), base_dir={str(REPO)!r})
tmp = Path({str(out_dir) if out_dir else ""!r} or tempfile.mkdtemp())
tmp.mkdir(parents=True, exist_ok=True)
s = synthetic_sample(np.random.default_rng(0), "img", "q", size=336, shape=SHAPES[{shape_name!r}])
write_sample(tmp / "s.h5", s)
print("cache_bytes", (tmp / "s.h5").stat().st_size, flush=True)
t = time.perf_counter()
sample = read_sample(tmp / "s.h5")
print("read_seconds", time.perf_counter() - t, flush=True)
# a metric job imports its libraries once for its shard's samples: warm them up on a toy-shaped sample
toy = synthetic_sample(np.random.default_rng(0), "img", "q", size=336, shape=SHAPES["toy"])
for m in cfg["metrics"]:
    compute_table(m, toy, metric_params(m, cfg["metrics"]), {{"model": "m", "image": "img", "question": "q"}})
for m in cfg["metrics"]:
    t = time.perf_counter()
    df = compute_table(m, sample, metric_params(m, cfg["metrics"]), {{"model": "m", "image": "img", "question": "q"}})
    sec = time.perf_counter() - t
    write_parquet([df], tmp / f"{{m}}.parquet")
    write_table(df, tmp / f"{{m}}.csv")
    print("metric", m, round(sec, 3), len(df), (tmp / f"{{m}}.parquet").stat().st_size,
          (tmp / f"{{m}}.csv").stat().st_size, flush=True)
    (tmp / f"{{m}}.csv").unlink()
"""
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    rows = [line.split()[1:] for line in out.splitlines() if line.startswith("metric ")]
    cache = int(next(line.split()[1] for line in out.splitlines() if line.startswith("cache_bytes")))
    read = float(next(line.split()[1] for line in out.splitlines() if line.startswith("read_seconds")))
    print(f"{shape_name}: one sample, {threads} thread(s), metrics of {config.name}; cache file {cache / 1e6:.2f} MB "
          f"read in {read:.2f} s")
    print(f"{'metric':14s} {'seconds':>8s} {'rows':>9s} {'Parquet MB':>10s} {'CSV MB':>8s}")
    for m, sec, n, size, csv in rows:
        print(f"{m:14s} {float(sec):8.2f} {int(n):9,d} {int(size) / 1e6:10.3f} {int(csv) / 1e6:8.2f}")
    print(f"{'all':14s} {sum(float(r[1]) for r in rows):8.2f} {sum(int(r[2]) for r in rows):9,d} "
          f"{sum(int(r[3]) for r in rows) / 1e6:10.3f} {sum(int(r[4]) for r in rows) / 1e6:8.2f}", flush=True)
    return rows


def synthetic_shards(template: Path, out_dir: Path, n: int, shards: int, keys: list[str],
                     seed: int = 0) -> list[str]:
    """A metric's dataset of ``n`` samples in ``shards`` Parquet files, from one sample's table
    (``template``): sample i is the template's rows with image ``im{i:05d}``, question ``q{i % 2}`` and
    every float value but the ``keys`` multiplied by an independent factor 1 + 0.05·z (z standard normal),
    so that the
    files hold the real row count, schema and (incompressible) values; written with the job's writer
    options (:func:`vlmattn.tables.parquet_options`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlmattn.tables import ROW_GROUP_ROWS, parquet_options

    t = pq.read_table(template)
    rows = len(t)
    rng = np.random.default_rng(seed)
    per = np.array_split(np.arange(n), shards)
    files = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, members in enumerate(per):
        path = out_dir / f"{k}.parquet"
        with pq.ParquetWriter(path, t.schema, **parquet_options(t.schema)) as w:
            for chunk in np.array_split(members, max(1, len(members) * rows // (4 * ROW_GROUP_ROWS))):
                big = pa.concat_tables([t] * len(chunk))
                cols = {}
                for f in t.schema:
                    if f.name == "image":
                        idx = np.repeat(np.arange(len(chunk), dtype=np.int32), rows)
                        cols[f.name] = pa.DictionaryArray.from_arrays(idx, pa.array([f"im{i:05d}" for i in chunk]))
                    elif f.name == "question":
                        idx = np.repeat((chunk % 2).astype(np.int32), rows)
                        cols[f.name] = pa.DictionaryArray.from_arrays(idx, pa.array(["q0", "q1"]))
                    elif pa.types.is_floating(f.type) and f.name not in keys:
                        x = big[f.name].to_numpy()
                        x = (x * (1 + 0.05 * rng.standard_normal(len(x)))).astype(np.float32)
                        cols[f.name] = pa.array(x, mask=np.isnan(x))
                    else:
                        cols[f.name] = big[f.name].combine_chunks()
                w.write_table(pa.table(cols, schema=t.schema), row_group_size=2 * ROW_GROUP_ROWS)
        files.append(str(path))
    return files


JOB = """
import json, resource, sys, time
from vlmattn.metrics import jobs
a = json.loads(sys.argv[1])
t = time.perf_counter()
getattr(jobs, a.pop("job"))(**a)
print("JOB", time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_job(job: str, **kw) -> tuple[float, float]:
    """One metric wing job function in a fresh one-thread process: (seconds, peak RSS MiB)."""
    import json

    env = {**os.environ, "PYTHONPATH": str(REPO), **{v: "1" for v in THREAD_VARS}}
    done = subprocess.run([sys.executable, "-c", JOB, json.dumps({"job": job, **kw})], capture_output=True,
                          text=True, env=env)
    if done.returncode:
        sys.exit(f"{job} failed:\n{done.stderr[-3000:]}")
    sec, rss = done.stdout.split("JOB")[-1].split()[:2]
    return float(sec), int(rss) / 1024


def summaries_at_scale(shape_name: str, config: Path, n: int, shards: int) -> None:
    """At ``n`` samples of ``shape_name``'s shapes: per metric of ``config``, the summary job and the plot
    job (their job functions in fresh processes, one thread each, one at a time) on a dataset written by
    :func:`synthetic_shards` from one real sample's table: wall time, peak RSS, dataset size."""
    import yaml

    from vlmattn.metrics import get_metric, summary_extras
    from vlmattn.metrics.options import metric_params
    from vlmattn.workflow import load_config

    cfg = load_config(yaml.safe_load(config.read_text()), base_dir=str(REPO))
    with tempfile.TemporaryDirectory(prefix="vlmattn-summaries-") as tmp:
        tmp = Path(tmp)
        per_sample(shape_name, config, out_dir=tmp / "one")
        print(f"\n{shape_name}, N = {n:,} samples in {shards} shards (two questions): summary and plot jobs, "
              f"one thread each")
        print(f"{'metric':14s} {'rows':>14s} {'dataset GB':>10s} {'write s':>8s} {'summary s':>9s} {'MiB':>6s} "
              f"{'plot s':>7s} {'MiB':>6s} {'summary rows':>12s}")
        for m in cfg["metrics"]:
            t0 = time.perf_counter()
            files = synthetic_shards(tmp / "one" / f"{m}.parquet", tmp / "tables" / m / "m", n, shards,
                                     get_metric(m).SUMMARY_KEYS)
            write = time.perf_counter() - t0
            size = sum(Path(f).stat().st_size for f in files)
            import pyarrow.parquet as pq
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            extras = {e: str(tmp / "summaries" / f"{m}_{e}.parquet") for e in summary_extras(m)}
            (tmp / "summaries").mkdir(exist_ok=True)
            out = str(tmp / "summaries" / f"{m}.csv")
            s_sec, s_rss = run_job("summary", name=m, tables=files, out=out, extras=extras)
            p_sec, p_rss = run_job("plot", name=m, summary=out, cfg=metric_params(m, cfg["metrics"]),
                                   out_dir=str(tmp / "plots"), extras=extras)
            with open(out) as f:
                n_summary = sum(1 for _ in f) - 1
            print(f"{m:14s} {rows:14,d} {size / 1e9:10.2f} {write:8.1f} {s_sec:9.1f} {s_rss:6.0f} {p_sec:7.1f} "
                  f"{p_rss:6.0f} {n_summary:12,d}", flush=True)
            for f in files:
                Path(f).unlink()


def other_analyses(shape_name: str) -> None:
    """``pruning_offline`` per sample and the contrast analyses per pair at these shapes
    (:mod:`bench.analyses_at_shapes`)."""
    from bench.analyses_at_shapes import measure, print_rows

    print_rows(shape_name, measure(shape_name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=None, choices=sorted(SHAPES),
                    help="instead of the scaling runs: per-metric seconds, rows and bytes of one sample of "
                         "these attention shapes, on one thread")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml",
                    help="with --shapes: the config whose metric blocks are measured")
    ap.add_argument("--summaries", type=int, default=0,
                    help="with --shapes: also the summary and plot jobs at this many samples")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--stage-size", type=int, default=1000, help="0: skip the metric stage")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--shards", type=int, default=None)
    args = ap.parse_args()
    if args.shapes:
        if args.summaries:
            summaries_at_scale(args.shapes, args.config, args.summaries, shard_count(args.summaries, args.shards))
        else:
            per_sample(args.shapes, args.config)
            other_analyses(args.shapes)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlmattn-scale-") as tmp:
        for n in [int(v) for v in args.sizes.split(",")]:
            wd = Path(tmp) / f"n{n}"
            shards = shard_count(n, args.shards)
            write_dataset(wd, n, shards)
            wall, rss, out = snakemake(wd, "--dry-run", "--quiet", "rules")
            rows.append((n, shards, planned(out), wall, rss / 1024))
            print(f"  N={n}: {rows[-1][2]} jobs, -n {wall:.1f} s, {rss / 1024:.0f} MiB", file=sys.stderr, flush=True)
        n = args.stage_size
        if not n:
            print_sizes(rows, args.cores)
            return
        wd = Path(tmp) / f"stage{n}"
        cfg = write_dataset(wd, n, shard_count(n, args.shards))
        files = write_caches(wd, cfg)
        metrics = default_metrics()
        walls = {t: baseline(wd, cfg, files, wd / "baseline", t) for t in (None, 1)}
        base_wall = min(walls.values())
        targets = [f"results/summaries/{m}.csv" for m in metrics]
        stage_wall, _, out = snakemake(wd, "--cores", str(args.cores), *targets)
        jobs = len(re.findall(r"^(?:local)?rule (?:metric|summary)_", out, re.M))
        extracted = len(re.findall(r"^(?:local)?rule extract", out, re.M))
        same = same_tables(wd / "results", wd / "baseline", metrics)
    print_sizes(rows, args.cores)
    print(f"\nmetric stage at N = {n}: {len(metrics)} metrics, {jobs} jobs ({extracted} extraction jobs rerun)")
    print(f"  in-process baseline {walls[None]:.1f} s with the default threads, {walls[1]:.1f} s with one thread")
    print(f"  faster baseline {base_wall:.1f} s, pipeline {stage_wall:.1f} s, ratio {stage_wall / base_wall:.2f} "
          f"(target <= 2); tables equal to the baseline's: {same}")


if __name__ == "__main__":
    main()
