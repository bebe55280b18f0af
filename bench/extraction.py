"""Cost of attention capture against plain generation and against eager ``output_attentions``.

Builds two random-weight models offline — LLaVA-1.5-shaped (CLIP 336 px / patch 14: 576 image
tokens, ~600-token prompt, multi-head attention) and Qwen2-VL-shaped (1344² px image: 2,304 image
tokens, ~2,330-token prompt, grouped-query attention, mrope) — at modest widths, then runs each
variant in a fresh subprocess (so peak RSS is the variant's own) and generates ``--steps`` tokens:

    a        plain SDPA ``generate``
    b        vlmattn capture of the language model (decode rows + last prefill row) → HDF5
    b+v      b plus the vision-encoder summaries without rollout (received, CLS rows) → HDF5
    b+v+r    b+v plus the encoder attention rollout (the pipeline default) → HDF5
    c        eager + ``output_attentions=True`` ``generate`` → ``torch.save(outputs.attentions)``

Time is the wall time of preprocessing + generation + writing the file, the best of ``--repeat``
runs after one warm-up call, and for every variant but c the best over ``--rounds`` alternating
fresh subprocesses (cores are shared, so single runs are noisy); peak RSS is ``ru_maxrss`` of the
subprocess (the largest over rounds). CPU time (``time.process_time``, best of the same runs) is
reported beside wall time: with one torch thread it is close to the wall time on idle cores and
less affected than it by other work on them. Prints the full table, the ratios b/a, (b+v)/a,
(b+v+r)/a, c/a and bytes on disk c/b, and summary tables of the capture's cost against a (wall
time, then CPU time). Targets: b/a ≤ 1.10 in time and ≤ 1.2 in peak RSS; (b+v)/a ≤ 1.15 and
(b+v+r)/a ≤ 1.30 in time, ≤ 1.2 in peak RSS; c/b ≥ 20 in bytes.

Usage: ``PYTHONPATH=. python bench/extraction.py [--steps 32] [--threads 2] [--models llava,qwen]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "What shape is in the image?"
VARIANTS = ("a", "b", "b+v", "b+v+r", "c")


def build(kind: str, out: Path) -> tuple[str, tuple[int, int]]:
    """Save a bench model of ``kind`` into ``out``; returns its family and the image size to use."""
    from vlmattn.models import replicas, toy

    if kind == "llava":
        spec = toy.ToySpec(
            image_size=336, patch_size=14, vision_hidden=128, vision_layers=4, vision_heads=4,
            text_hidden=512, text_layers=8, text_heads=8, text_kv_heads=8, max_positions=4096,
        )
        model, processor = toy.build_toy(spec)
        family, size = "llava", (400, 336)
    else:
        spec = replicas.ReplicaSpec(
            vision_hidden=64, vision_layers=2, vision_heads=4, text_hidden=512, text_layers=8,
            text_heads=8, text_kv_heads=2, max_positions=4096, max_pixels=1344 * 1344,
        )
        model, processor = replicas.build_replica("qwen2_vl", spec)
        family, size = "qwen2_vl", (1344, 1344)
    toy.save(model, processor, out)
    return family, size


def image(size: tuple[int, int]):
    from vlmattn.images.synthetic import DEFAULT_SCENES, draw

    return draw(DEFAULT_SCENES["two_shapes"], max(size)).resize(size)


def worker(variant: str, family: str, model_dir: str, size: tuple[int, int], steps: int, out_dir: str,
           repeat: int = 3) -> dict:
    """Run one variant in this process; returns its timings, peak RSS and file size."""
    import torch

    img = image(size)
    out = Path(out_dir) / f"{variant.replace('+', '_')}"
    if variant.startswith("b"):
        from vlmattn.inference import capture_attention, load_model
        from vlmattn.store import write_sample

        lm = load_model("bench", family, model_dir)
        lm.model.generation_config.min_new_tokens = steps

        def run(n):
            s = capture_attention(lm, img, QUESTION, max_new_tokens=n, vision_encoder=variant != "b",
                        vision_rollout=variant == "b+v+r")
            write_sample(out.with_suffix(".h5"), s)
            return out.with_suffix(".h5"), len(s.input_ids)

    else:
        from transformers import AutoModelForImageTextToText

        from vlmattn.adapters import get_adapter
        from vlmattn.processors import load_processor

        impl = "eager" if variant == "c" else "sdpa"
        model = AutoModelForImageTextToText.from_pretrained(model_dir, attn_implementation=impl).eval()
        model.generation_config.min_new_tokens = steps
        processor = load_processor(model_dir)
        adapter = get_adapter(family)

        @torch.no_grad()
        def run(n):
            inputs = adapter.build_inputs(processor, img, QUESTION)
            if variant == "a":
                model.generate(**inputs, max_new_tokens=n, do_sample=False)
                return None, inputs["input_ids"].shape[1]
            res = model.generate(
                **inputs, max_new_tokens=n, do_sample=False, output_attentions=True, return_dict_in_generate=True
            )
            torch.save(res.attentions, out.with_suffix(".pt"))
            return out.with_suffix(".pt"), inputs["input_ids"].shape[1]

    run(2)  # warm-up
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        path, n_prompt = run(steps)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {
        "variant": variant,
        "prompt_tokens": int(n_prompt),
        "wall_s": min(walls),
        "walls_s": [round(w, 3) for w in walls],
        "cpu_s": min(cpus),
        "cpus_s": [round(c, 3) for c in cpus],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes": path.stat().st_size if path else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant (1: robust on shared cores)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating fresh subprocesses for every variant but c")
    ap.add_argument("--models", default="llava,qwen")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--worker", nargs=5, metavar=("VARIANT", "FAMILY", "MODEL_DIR", "SIZE", "OUT_DIR"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        variant, family, model_dir, size, out_dir = args.worker
        w, h = (int(v) for v in size.split("x"))
        print(json.dumps(worker(variant, family, model_dir, (w, h), args.steps, out_dir, args.repeat)))
        return

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlmattn-bench-") as tmp:
        for kind in args.models.split(","):
            model_dir = Path(tmp) / kind
            family, size = build(kind, model_dir)
            res = {}
            variants = args.variants.split(",")
            plan = [v for _ in range(args.rounds) for v in variants if v != "c"]
            plan += [v for v in variants if v == "c"]
            for variant in plan:
                cmd = [sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
                       "--repeat", str(args.repeat),
                       "--worker", variant, family, str(model_dir), f"{size[0]}x{size[1]}", tmp]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"bench {kind}/{variant} failed:\n{done.stderr[-2000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"  {kind:5s} {variant:6s} {r}", file=sys.stderr, flush=True)
                if variant in res:
                    for t in ("wall", "cpu"):
                        r[f"{t}s_s"] = res[variant][f"{t}s_s"] + r[f"{t}s_s"]
                        r[f"{t}_s"] = min(r[f"{t}_s"], res[variant][f"{t}_s"])
                    r["peak_rss_mb"] = max(r["peak_rss_mb"], res[variant]["peak_rss_mb"])
                res[variant] = r
            res = {v: res[v] for v in variants if v in res}
            rows.append((kind, res))
    print_table(rows, args.steps)


def print_table(rows, steps: int) -> None:
    print(f"\nvlmattn extraction bench: {steps} new tokens, {os.cpu_count()} CPUs visible, times in s, RSS in MiB\n")
    head = (f"{'model':6s} {'tokens':>6s} {'variant':7s} {'time':>7s} {'CPU':>7s} {'peak RSS':>9s} {'bytes':>13s} "
            f"{'time/a':>7s} {'CPU/a':>6s} {'RSS/a':>6s}")
    print(head)
    print("-" * len(head))
    for kind, res in rows:
        a = res.get("a")
        for v, r in res.items():
            tr = f"{r['wall_s'] / a['wall_s']:.2f}" if a else "-"
            cr = f"{r['cpu_s'] / a['cpu_s']:.2f}" if a else "-"
            mr = f"{r['peak_rss_mb'] / a['peak_rss_mb']:.2f}" if a else "-"
            print(f"{kind:6s} {r['prompt_tokens']:6d} {v:7s} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['peak_rss_mb']:9.0f} "
                  f"{r['bytes']:13,d} {tr:>7s} {cr:>6s} {mr:>6s}")
    print()
    for kind, res in rows:
        parts = []
        if "a" in res and "b" in res:
            parts.append(f"b/a time {res['b']['wall_s'] / res['a']['wall_s']:.2f} (≤ 1.10)")
            parts.append(f"b/a RSS {res['b']['peak_rss_mb'] / res['a']['peak_rss_mb']:.2f} (≤ 1.2)")
        if "a" in res and "c" in res:
            parts.append(f"c/a time {res['c']['wall_s'] / res['a']['wall_s']:.2f}")
            parts.append(f"c/a RSS {res['c']['peak_rss_mb'] / res['a']['peak_rss_mb']:.2f}")
        if "b" in res and "c" in res:
            parts.append(f"c/b bytes {res['c']['bytes'] / res['b']['bytes']:.0f} (≥ 20)")
        for v in ("b+v", "b+v+r"):
            if v in res and "a" in res:
                parts.append(f"({v})/a time {res[v]['wall_s'] / res['a']['wall_s']:.2f}")
                parts.append(f"({v})/a RSS {res[v]['peak_rss_mb'] / res['a']['peak_rss_mb']:.2f}")
            if v in res and "c" in res:
                parts.append(f"c/({v}) bytes {res['c']['bytes'] / res[v]['bytes']:.0f}")
        print(f"{kind}: " + ", ".join(parts))
    print_summary(rows)


def print_summary(rows) -> None:
    """The capture's cost against plain generation (a), as Markdown tables: in wall time, then in the
    worker's CPU time (robust where other work shares the cores)."""
    names = {"llava": "LLaVA-shaped", "qwen": "Qwen-shaped"}

    def ratio(res, v, key):
        return f"{res[v][key] / res['a'][key]:.2f}" if v in res and "a" in res else "-"

    for key, label in (("wall_s", "time"), ("cpu_s", "CPU time")):
        print(f"\n| model | prompt tokens | b/a {label} | (b+v)/a {label} | (b+v+r)/a {label} | (b+v+r)/a peak RSS |")
        print("|---|---|---|---|---|---|")
        for kind, res in rows:
            n = next(iter(res.values()))["prompt_tokens"]
            print(f"| {names.get(kind, kind)} | {n:,} | {ratio(res, 'b', key)} | {ratio(res, 'b+v', key)} | "
                  f"{ratio(res, 'b+v+r', key)} | {ratio(res, 'b+v+r', 'peak_rss_mb')} |")


if __name__ == "__main__":
    main()
