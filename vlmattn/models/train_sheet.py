"""Train the toy LLaVA on a sample sheet of (image, question, answer) rows, on CPU: the recipe for a
dataset brought as files (e.g. easy-VQA, ``scripts/easy_vqa.py``) rather than the shapes task.

Recipe (:class:`SheetTrainSpec`): a fresh model (:class:`vlmattn.models.toy.ToySpec`) whose tokenizer
is trained on the sheet's questions and answers; ``steps`` AdamW updates of the whole model on the
answer loss alone (cross-entropy on the answer tokens and ``</s>``, the prompt built exactly as at
inference, :func:`vlmattn.models.train.encode`); each batch = ``batch_size`` rows drawn uniformly with
replacement by ``numpy.random.default_rng(seed)``; learning rate warmed up linearly, then cosine
decay to 10 % (:func:`vlmattn.models.train._lr_factor`). The shapes task's per-patch objective and
scene probe need its scene ground truth and are not used.

Held-out accuracy every ``eval_every`` steps and at the end: greedy answers of the checkpoint as saved
and reloaded (:func:`vlmattn.models.train.score_checkpoint`) on the first ``heldout_n`` rows of
``heldout_sheet``, the first word compared with the expected answer, per ``answer_type`` (``all`` for
rows without one) and overall (``all_types``).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..errors import InputError
from ..progress import progress
from .toy import ToySpec, build_toy, known_settings

SHEET_TOY = ToySpec(image_size=48, patch_size=6, vision_layers=3, text_layers=2)


@dataclass(frozen=True)
class SheetTrainSpec:
    """Training on a sheet; ``sheet``/``heldout_sheet`` paths relative to the run's folder."""

    sheet: str
    heldout_sheet: str
    seed: int = 0
    model: ToySpec = field(default_factory=lambda: SHEET_TOY)
    batch_size: int = 32
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    eval_every: int = 250
    heldout_n: int = 256
    threads: int = 2

    @classmethod
    def from_dict(cls, d: dict | None) -> SheetTrainSpec:
        d = known_settings(cls, d, "training")
        for key in ("sheet", "heldout_sheet"):
            if not d.get(key):
                raise InputError(f"config models build spec: training on a sheet needs {key!r}")
        if isinstance(d.get("model"), dict):
            d["model"] = ToySpec.from_dict(d["model"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SheetExample:
    """One training or held-out row: ``image`` (RGB), ``question``, ``answer`` and ``qtype``
    (the sheet's ``answer_type``, else ``all``); ``corner`` None (the shapes task's field)."""

    image: Image.Image
    question: str
    answer: str
    qtype: str
    corner: None = None


def read_examples(path: str, base_dir: Path = Path("."), limit: int | None = None) -> list[SheetExample]:
    """The rows of sheet ``path`` with their images opened (the first ``limit`` rows when given);
    one-line InputError naming the line for a row without a question text or an answer."""
    from ..datasets import read_sheet

    rows = read_sheet(path, base_dir).rows[:limit]
    out = []
    for row in rows:
        if row.question is None or not row.answers:
            raise InputError(f"sheet {path} line {row.line}: a training row needs a question text and an answer")
        with Image.open(base_dir / row.image_path) as im:
            out.append(SheetExample(im.convert("RGB"), row.question, row.answers[0].lower(), row.answer_type or "all"))
    return out


def build(spec: SheetTrainSpec, examples: list[SheetExample]):
    """Fresh ``(model, processor)`` whose tokenizer learned the examples' questions and answers."""
    corpus = sorted({e.question for e in examples}) + sorted({f"ASSISTANT: {e.answer}" for e in examples})
    return build_toy(spec.model, extra_text=corpus)


def score(examples: list[SheetExample], answers: list[str]) -> dict[str, float]:
    """Accuracy per answer type and overall (``all_types``): first word of the answer == expected."""
    from .train import first_word

    hits: dict[str, list[bool]] = {}
    for e, a in zip(examples, answers, strict=True):
        ok = first_word(a) == e.answer
        hits.setdefault(e.qtype, []).append(ok)
        hits.setdefault("all_types", []).append(ok)
    return {k: float(np.mean(v)) for k, v in sorted(hits.items())}


def _heldout_accuracy(model, processor, heldout, tmp: Path) -> dict[str, float]:
    import shutil

    from .toy import save
    from .train import generate_answers

    ckpt = tmp / "eval"
    shutil.rmtree(ckpt, ignore_errors=True)
    model.eval()
    save(model, processor, ckpt)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(ckpt)
    loaded = AutoModelForImageTextToText.from_pretrained(ckpt).eval()
    return score(heldout, generate_answers(loaded, proc, heldout))


def train_on_sheet(spec: SheetTrainSpec, out_dir: str | Path, base_dir: Path = Path("."),
                   report_csv: str | Path | None = None, report_png: str | Path | None = None) -> pd.DataFrame:
    """Train per ``spec`` (module docstring), save the checkpoint to ``out_dir`` (atomically, with
    ``training.json``) and return the report: ``step, question_type, loss, heldout_accuracy`` every
    ``eval_every`` steps (``question_type`` = answer type; ``loss`` the mean training answer loss of that
    type since the previous row)."""
    from .train import _lr_factor, _save_atomic, _set_lr, _write_atomic, answer_losses, encode, plot_report

    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        train_rows = read_examples(spec.sheet, base_dir)
        heldout = read_examples(spec.heldout_sheet, base_dir, limit=spec.heldout_n)
        torch.manual_seed(spec.seed)
        rng = np.random.default_rng(spec.seed)
        model, processor = build(spec, train_rows + heldout)
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
        rows, window = [], {}
        started = time.time()
        bar = progress(total=spec.steps, desc="train", unit="step")
        with tempfile.TemporaryDirectory(prefix="vlmattn-train-") as tmp:
            model.train()
            for step in range(1, spec.steps + 1):
                _set_lr(opt, spec.lr * _lr_factor(step - 1, spec.steps, spec.warmup))
                batch_rows = [train_rows[i] for i in rng.integers(len(train_rows), size=spec.batch_size)]
                batch = encode(processor, batch_rows)
                labels = batch.pop("labels")
                per_example = answer_losses(model(**batch, use_cache=False).logits, labels)
                loss = per_example.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for e, lv in zip(batch_rows, per_example.tolist(), strict=True):
                    window.setdefault(e.qtype, []).append(lv)
                    window.setdefault("all_types", []).append(lv)
                bar.update()
                bar.set_postfix(answer=f"{loss.item():.3f}", refresh=False)
                if step % spec.eval_every == 0 or step == spec.steps:
                    acc = _heldout_accuracy(model, processor, heldout, Path(tmp))
                    model.train()
                    for key in sorted(set(window) | set(acc)):
                        rows.append({"step": step, "question_type": key,
                                     "loss": float(np.mean(window[key])) if key in window else float("nan"),
                                     "heldout_accuracy": acc.get(key, float("nan"))})
                    window = {}
                    bar.write(f"step {step} ({time.time() - started:.0f}s): "
                              + " ".join(f"{k}={v:.2f}" for k, v in acc.items()))
        bar.close()
        model.eval()
        report = pd.DataFrame(rows, columns=["step", "question_type", "loss", "heldout_accuracy"])
        _save_atomic(model, processor, spec, report, Path(out_dir))
    finally:
        torch.set_num_threads(threads)
    if report_csv is not None:
        _write_atomic(Path(report_csv), lambda p: report.to_csv(p, index=False))
    if report_png is not None:
        _write_atomic(Path(report_png), lambda p: plot_report(report, p))
    return report
