"""easy-VQA (the ``easy-vqa`` package, MIT: 4,000 train / 1,000 test 64 × 64 images of one shape
each, 38,575 / 9,673 questions, 13 answers) written as sample sheets and COCO boxes.

``python -m vlmattn.easy_vqa OUT [--train N] [--test N] [--samples N] [--seed S]`` writes into ``OUT``:

* ``train.tsv`` / ``test.tsv``: sample sheets (``image, image_id, question, expected, answer_type``), all
  questions of the split or ``N`` of them drawn without replacement by
  ``numpy.random.default_rng(seed)`` (kept in the package's order); ``answer_type`` is ``shape``,
  ``color``, ``yes_no`` or ``yes_no_negated`` (a yes/no question holding "not" or "no": "is there not a
  red shape?");
* ``samples.tsv``: the first ``--samples`` (200) rows of ``test.tsv``, the samples whose attention is
  captured;
* ``images/{split}/{id}.png``: the images those questions ask about, copied;
* ``train.json`` / ``test.json``: COCO boxes, one object per image: the bounding box of the pixels that
  differ from the image's background colour (its top-left pixel), named by the shape that the image's
  shape questions answer (``shape`` when none asks).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("circle", "rectangle", "triangle")
SPLITS = ("train", "test")


def answer_type(question: str, answer: str) -> str:
    """``shape``, ``color``, ``yes_no`` or ``yes_no_negated`` (module docstring)."""
    if answer in SHAPES:
        return "shape"
    if answer not in ("yes", "no"):
        return "color"
    words = question.rstrip("?").split()
    return "yes_no_negated" if ("not" in words or "no" in words) else "yes_no"


def foreground_box(image: Image.Image) -> list[float]:
    """``[x0, y0, x1, y1]`` (exclusive right/bottom) of the pixels unlike the top-left pixel."""
    a = np.asarray(image.convert("RGB"))
    fg = (a != a[0, 0]).any(-1)
    ys, xs = np.nonzero(fg)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _split(split: str):
    import easy_vqa

    texts, answers, ids = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    return texts, answers, ids, paths


def write_split(split: str, out: Path, n: int | None, seed: int, samples: int | None = None) -> int:
    """Write one split (module docstring; with ``samples``, also ``samples.tsv``); returns its number
    of questions."""
    texts, answers, ids, paths = _split(split)
    order = np.arange(len(texts))
    if n is not None:
        if not 1 <= n <= len(texts):
            raise ValueError(f"--{split} must lie in 1 … {len(texts)}, got {n}")
        order = np.sort(np.random.default_rng(seed).choice(len(texts), n, replace=False))
    folder = out / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    used = sorted({int(ids[i]) for i in order})
    names: dict[int, str] = {}
    for i in range(len(texts)):
        if answers[i] in SHAPES:
            names.setdefault(int(ids[i]), answers[i])
    coco = {"images": [], "annotations": [], "categories": [{"id": k, "name": c}
                                                            for k, c in enumerate(("shape", *SHAPES))]}
    for image_id in used:
        target = folder / f"{image_id}.png"
        shutil.copyfile(paths[image_id], target)
        with Image.open(target) as im:
            width, height = im.size
            x0, y0, x1, y1 = foreground_box(im)
        coco["images"].append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})
        category = ("shape", *SHAPES).index(names.get(image_id, "shape"))
        coco["annotations"].append({"id": image_id, "image_id": image_id, "category_id": category,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0]})
    _atomic(out / f"{split}.json", lambda f: f.write(json.dumps(coco) + "\n"))

    def sheet(rows):
        def write(f):
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["image", "image_id", "question", "expected", "answer_type"])
            for i in rows:
                w.writerow([f"images/{split}/{ids[i]}.png", f"{split}_{ids[i]}", texts[i], answers[i],
                            answer_type(texts[i], answers[i])])
        return write

    _atomic(out / f"{split}.tsv", sheet(order))
    if samples is not None:
        _atomic(out / "samples.tsv", sheet(order[:samples]))
    return len(order)


def _atomic(path: Path, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it onto ``path``."""
    from .tables import atomic_target

    tmp = atomic_target(path)
    try:
        with open(tmp, "w", newline="") as f:
            write(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vlmattn.easy_vqa", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--train", type=int, default=None, help="train questions drawn (default: all 38,575)")
    parser.add_argument("--test", type=int, default=None, help="test questions drawn (default: all 9,673)")
    parser.add_argument("--samples", type=int, default=200, help="test rows whose attention is captured")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.samples < 1:
        raise SystemExit(f"python -m vlmattn.easy_vqa: --samples must be at least 1, got {args.samples}")
    try:
        import easy_vqa  # noqa: F401
    except ImportError:
        raise SystemExit("easy-vqa is not installed: pip install easy-vqa==1.0") from None
    args.out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        try:
            n = write_split(split, args.out, getattr(args, split), args.seed,
                            args.samples if split == "test" else None)
        except ValueError as e:
            raise SystemExit(f"python -m vlmattn.easy_vqa: {e}") from None
        print(f"{split}: {n} questions -> {args.out / (split + '.tsv')}")


if __name__ == "__main__":
    main()
