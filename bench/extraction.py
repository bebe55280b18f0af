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

Batched generation (``--batches 1,4,16``): for each batch size ``b``, ``b`` samples (one image,
questions of different lengths, so prompts are left-padded) in one ``generate`` call, in fresh
subprocesses as above: ``plain`` (SDPA ``generate``) against ``capture`` (:func:`capture_batch`, the
pipeline's default capture: decode rows, last prefill row, vision-encoder summaries with rollout);
samples/s, their ratio per batch, peak RSS ratio, and batch ``b`` against batch 1. Targets on a GPU:
capture ≥ 0.9× plain samples/s and ≤ 1.2× its peak memory at each batch, batch 16 ≥ 4× batch 1.

Bytes per sample (``--bytes``) of the two decode layouts (``extraction.layout``) at the LLaVA-1.5-7B
and Qwen2.5-VL-7B attention shapes, random init, one 336 px synthetic image, ``--steps`` new tokens,
the schema's default extraction settings: the models are built at their real widths, heads and
key-value heads but with 2 language-model and 2 vision-encoder layers, and every dataset's bytes are
scaled by real/built layers along its layer axis (decode and prefill rows: LLM layers; the
``/vision_encoder`` group: encoder layers); datasets without a layer axis are counted as written.

Usage: ``PYTHONPATH=. python bench/extraction.py [--steps 32] [--threads 2] [--models llava,qwen]``;
``... --batches 1,4,16 [--steps 16]``; ``... --bytes``
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
        from vlmattn.engine.inference import capture_attention, load_model
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

        from vlmattn.engine.adapters import get_adapter
        from vlmattn.engine.processors import load_processor

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


BATCH_QUESTIONS = ["What shape is in the image?", "Colour?", "How many shapes are there in this picture?",
                   "Is there anything in the top left corner?"]


def batch_worker(variant: str, family: str, model_dir: str, size: tuple[int, int], steps: int, batch: int,
                 repeat: int = 2) -> dict:
    """``plain`` or ``capture`` generation of a batch of ``batch`` samples; best wall time of ``repeat``."""
    import torch

    img = image(size)
    questions = [BATCH_QUESTIONS[i % len(BATCH_QUESTIONS)] for i in range(batch)]
    if variant == "capture":
        from vlmattn.engine.inference import capture_batch, load_model

        lm = load_model("bench", family, model_dir)
        lm.model.generation_config.min_new_tokens = steps

        def run(n):
            capture_batch(lm, [img] * batch, questions, max_new_tokens=n)
    else:
        from transformers import AutoModelForImageTextToText

        from vlmattn.engine.adapters import get_adapter
        from vlmattn.engine.processors import load_processor

        model = AutoModelForImageTextToText.from_pretrained(model_dir, attn_implementation="sdpa").eval()
        model.generation_config.min_new_tokens = steps
        processor = load_processor(model_dir)
        adapter = get_adapter(family)

        @torch.no_grad()
        def run(n):
            if batch == 1:
                inputs = adapter.build_inputs(processor, img, questions[0])
            else:
                inputs = adapter.build_batch_inputs(processor, [img] * batch, questions)
            model.generate(**inputs, max_new_tokens=n, do_sample=False)

    run(2)  # warm-up
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(steps)
        walls.append(time.perf_counter() - t0)
    return {"variant": variant, "batch": batch, "wall_s": min(walls), "samples_per_s": batch / min(walls),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(args, env: dict, label: str, *worker: str) -> dict:
    """Run this script's worker mode ``worker`` (``--worker …`` or ``--batch-worker …``) in a fresh
    subprocess with the run's steps, threads and repeats; returns its JSON result."""
    cmd = [sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
           "--repeat", str(args.repeat), *worker]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench {label} failed:\n{done.stderr[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {label} {r}", file=sys.stderr, flush=True)
    return r


def batch_main(args, env: dict) -> None:
    batches = [int(b) for b in args.batches.split(",")]
    out = []
    with tempfile.TemporaryDirectory(prefix="vlmattn-bench-") as tmp:
        for kind in args.models.split(","):
            model_dir = Path(tmp) / kind
            family, size = build(kind, model_dir)
            res = {}
            for _ in range(args.rounds):
                for b in batches:
                    for variant in ("plain", "capture"):
                        r = run_worker(args, env, f"{kind}/{variant}/batch {b}", "--batch-worker", variant, family,
                                       str(model_dir), f"{size[0]}x{size[1]}", str(b))
                        old = res.setdefault((variant, b), r)  # best time, largest peak RSS over rounds
                        res[(variant, b)] = {**min(old, r, key=lambda x: x["wall_s"]),
                                             "peak_rss_mb": max(old["peak_rss_mb"], r["peak_rss_mb"])}
            out.append((kind, res))
    names = {"llava": "LLaVA-shaped", "qwen": "Qwen-shaped"}
    print(f"\nbatched generation: {args.steps} new tokens, {args.threads} torch thread(s), {os.cpu_count()} CPUs "
          "visible; samples/s, best of repeats and rounds; peak RSS of the subprocess")
    print("\n| model | batch | plain samples/s | capture samples/s | capture/plain | peak RSS capture/plain | "
          "plain vs batch 1 | capture vs batch 1 |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, res in out:
        p1, c1 = res[("plain", batches[0])], res[("capture", batches[0])]
        for b in batches:
            p, c = res[("plain", b)], res[("capture", b)]
            print(f"| {names.get(kind, kind)} | {b} | {p['samples_per_s']:.2f} | {c['samples_per_s']:.2f} | "
                  f"{c['samples_per_s'] / p['samples_per_s']:.2f} | {c['peak_rss_mb'] / p['peak_rss_mb']:.2f} | "
                  f"{p['samples_per_s'] / p1['samples_per_s']:.2f} | {c['samples_per_s'] / c1['samples_per_s']:.2f} |")


#: (family, spec kind, real LLM layers, real encoder layers) of the 7B attention shapes
SHAPES_7B = {"llava-1.5-7b": ("llava", 32, 24), "qwen2.5-vl-7b": ("qwen2_5_vl", 28, 32)}


def build_7b_shape(name: str, out: Path):
    """A 2 + 2-layer model with the attention shapes of ``name`` (:data:`SHAPES_7B`), saved to ``out``."""
    from vlmattn.models import replicas, toy

    if name == "llava-1.5-7b":
        spec = toy.ToySpec(image_size=336, patch_size=14, vision_hidden=1024, vision_layers=2, vision_heads=16,
                           text_hidden=4096, text_layers=2, text_heads=32, text_kv_heads=32, max_positions=4096)
        model, processor = toy.build_toy(spec)
    else:
        spec = replicas.ReplicaSpec(vision_hidden=1280, vision_layers=2, vision_heads=16, text_hidden=3584,
                                    text_layers=2, text_heads=28, text_kv_heads=4, max_positions=4096,
                                    window_tokens=4, full_attention_layers=(1,))
        model, processor = replicas.build_replica("qwen2_5_vl", spec)
    toy.save(model, processor, out)


def layer_scaled_bytes(path: Path, llm_scale: float, encoder_scale: float) -> tuple[float, dict]:
    """Bytes of the HDF5 file at ``path`` with every dataset's stored bytes scaled along its layer axis
    (``/attention`` decode and prefill rows by ``llm_scale``, ``/vision_encoder`` by ``encoder_scale``);
    returns the total and the scaled bytes per dataset."""
    import h5py

    sizes = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                scale = 1.0
                if name.startswith("attention/") and name.split("/")[1] in ("decode", "decode_vision",
                                                                             "decode_segments", "prefill"):
                    scale = llm_scale
                elif name.startswith("vision_encoder/") and obj.ndim >= 2 and name.split("/")[1] not in (
                        "patch_grid", "patch_spans", "patch_boxes"):
                    scale = encoder_scale
                sizes[name] = (obj.id.get_storage_size(), scale)
        f.visititems(visit)
    overhead = path.stat().st_size - sum(n for n, _ in sizes.values())  # metadata, attributes
    scaled = {name: n * scale for name, (n, scale) in sizes.items()}
    return sum(scaled.values()) + overhead, scaled


def bytes_main(args) -> None:
    from vlmattn.engine.inference import capture_attention, load_model
    from vlmattn.images.synthetic import DEFAULT_SCENES, draw
    from vlmattn.store import write_sample

    print(f"\nbytes per sample: {args.steps} new tokens, one 336 px synthetic image, float16, gzip 1, schema "
          "default extraction settings, scaled from 2 + 2 built layers to the real counts\n")
    print("| shapes | prompt tokens | vision tokens | decode rows, raw float16 | full layout | compact layout | "
          "compact/full |")
    print("|---|---|---|---|---|---|---|")
    img = draw(DEFAULT_SCENES["two_shapes"], 336)
    with tempfile.TemporaryDirectory(prefix="vlmattn-bench-") as tmp:
        for name, (family, llm_layers, enc_layers) in SHAPES_7B.items():
            model_dir = Path(tmp) / name
            build_7b_shape(name, model_dir)
            lm = load_model("bench", family, str(model_dir))
            lm.model.generation_config.min_new_tokens = args.steps
            s = capture_attention(lm, img, QUESTION, max_new_tokens=args.steps)
            got = {}
            for layout in ("full", "compact"):
                path = Path(tmp) / f"{name}_{layout}.h5"
                write_sample(path, s, layout=layout)
                got[layout], _ = layer_scaled_bytes(path, llm_layers / 2, enc_layers / 2)
            raw = s.decode.size * 2 * llm_layers / 2
            print(f"| {name} | {len(s.input_ids)} | {len(s.vision_index)} | {raw / 1e6:.1f} MB | "
                  f"{got['full'] / 1e6:.1f} MB | {got['compact'] / 1e6:.1f} MB | {got['compact'] / got['full']:.3f} |",
                  flush=True)
            del lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant (1: robust on shared cores)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating fresh subprocesses for every variant but c")
    ap.add_argument("--models", default="llava,qwen")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--worker", nargs=5, metavar=("VARIANT", "FAMILY", "MODEL_DIR", "SIZE", "OUT_DIR"))
    ap.add_argument("--batches", help="batch sizes, e.g. 1,4,16: the batched-generation table instead")
    ap.add_argument("--bytes", action="store_true", help="bytes per sample of the two layouts at 7B shapes instead")
    ap.add_argument("--batch-worker", nargs=5, metavar=("VARIANT", "FAMILY", "MODEL_DIR", "SIZE", "BATCH"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        variant, family, model_dir, size, out_dir = args.worker
        w, h = (int(v) for v in size.split("x"))
        print(json.dumps(worker(variant, family, model_dir, (w, h), args.steps, out_dir, args.repeat)))
        return
    if args.batch_worker:
        variant, family, model_dir, size, batch = args.batch_worker
        w, h = (int(v) for v in size.split("x"))
        print(json.dumps(batch_worker(variant, family, model_dir, (w, h), args.steps, int(batch), args.repeat)))
        return

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if args.bytes:
        bytes_main(args)
        return
    if args.batches:
        batch_main(args, env)
        return
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
                r = run_worker(args, env, f"{kind}/{variant}", "--worker", variant, family, str(model_dir),
                               f"{size[0]}x{size[1]}", tmp)
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
            print(f"{kind:6s} {r['prompt_tokens']:6d} {v:7s} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} "
                  f"{r['peak_rss_mb']:9.0f} {r['bytes']:13,d} {tr:>7s} {cr:>6s} {mr:>6s}")
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
