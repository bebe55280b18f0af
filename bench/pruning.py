"""Prefill and decode time of online visual-token pruning against the unpruned model, on the CPU.

Builds the LLaVA-1.5-shaped random-weight model of ``bench/extraction.py`` (CLIP 336 px / patch 14:
576 image tokens, ~600-token prompt, 8 decoder layers of width 512) and runs, in this one process,
:func:`vlmattn.engine.pruned.generate_pruned` for

    none         keep=None (nothing pruned)
    drop R       mode "drop" at layer K, keeping a random (1 − R) of the 576 vision tokens
    mask R       mode "mask" at layer K, same tokens (no savings expected)

Each variant's times are the best of ``--repeat`` calls after one warm-up call; the variants are
interleaved round by round so that load on shared cores affects them alike. Prints prefill and decode
seconds and their ratios to ``none``, and the prefill ratio that FastV's per-layer cost
``C(n) = 4nd² + 2n²d + 2ndm`` predicts, ``[K·C(N) + (L−K)·C(N−d)] / [L·C(N)]``.

Usage: ``PYTHONPATH=. python bench/pruning.py [--layer 2] [--ratios 0.5,0.75] [--steps 8] [--threads 2]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

QUESTION = "What shape is in the image?"


def layer_cost(n: int, d: int, m: int) -> float:
    """FastV's multiply-add count of one decoder layer over ``n`` tokens (width ``d``, MLP width ``m``)."""
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--ratios", default="0.5,0.75", help="fractions of the vision tokens dropped")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch
    from extraction import build, image

    from vlmattn.engine.inference import load_model, model_inputs
    from vlmattn.engine.pruned import generate_pruned

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        family, size = build("llava", Path(tmp) / "model")
        lm = load_model("bench_llava", family, str(Path(tmp) / "model"))
    img = image(size)
    inputs = model_inputs(lm, img, QUESTION)
    n = int(inputs["input_ids"].shape[1])
    v = int((inputs["input_ids"][0] == lm.model.config.image_token_id).sum())
    cfg = lm.model.config.get_text_config()
    rng = np.random.default_rng(0)
    variants = {"none": dict(keep=None, mode="drop")}
    for r in (float(x) for x in args.ratios.split(",")):
        keep = rng.permutation(v)[: round(v * (1 - r))]
        variants[f"drop {r:g}"] = dict(keep=keep, mode="drop")
        variants[f"mask {r:g}"] = dict(keep=keep, mode="mask")
    best = {name: [np.inf, np.inf] for name in variants}
    for rnd in range(args.repeat + 1):
        for name, kw in variants.items():
            res = generate_pruned(lm, img, QUESTION, layer=args.layer, positions="keep", max_new_tokens=args.steps,
                                  **kw)
            if rnd:  # round 0 warms up
                best[name] = [min(best[name][0], res.prefill_seconds), min(best[name][1], res.decode_seconds)]
    print(f"N = {n} prompt tokens, V = {v} vision tokens, L = {cfg.num_hidden_layers} layers, K = {args.layer}, "
          f"{args.steps} tokens, {args.threads} threads, best of {args.repeat}")
    print(f"{'variant':<10} {'prefill s':>10} {'ratio':>7} {'FastV C':>8} {'decode s':>10} {'ratio':>7}")
    p0, d0 = best["none"]
    total = cfg.num_hidden_layers * layer_cost(n, cfg.hidden_size, cfg.intermediate_size)
    for name, (p, d) in best.items():
        dropped = 0 if variants[name]["keep"] is None else v - len(variants[name]["keep"])
        k = args.layer
        pruned = k * layer_cost(n, cfg.hidden_size, cfg.intermediate_size) + (cfg.num_hidden_layers - k) * layer_cost(
            n - dropped, cfg.hidden_size, cfg.intermediate_size)
        predicted = pruned / total if variants[name]["mode"] == "drop" else 1.0
        print(f"{name:<10} {p:>10.4f} {p / p0:>7.3f} {predicted:>8.3f} {d:>10.4f} {d / d0:>7.3f}")


if __name__ == "__main__":
    main()
