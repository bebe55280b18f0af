"""Train the toy LLaVA on the synthetic shapes task (:mod:`vlmattn.models.shapes_task`), on CPU.

Recipe (all settings in :class:`TrainSpec`), one fresh batch of scenes per step. Scenes are drawn at
``render_size`` (224, the pipeline's synthetic size) and the processor resizes them to the model's
input, so training sees the same interpolated pixels the pipeline's images give:

1. *Patch stage* (``patch_steps``): vision tower + projector only, on the per-patch objective.
2. *Joint stage* (``steps``): the whole model on the answer loss plus ``patch_weight`` × the
   per-patch objective.

Answer loss: cross-entropy on the answer tokens only (the one-word answer and ``</s>``), the prompt
being built exactly as at inference (``apply_chat_template`` then ``processor(images=, text=)``).

Per-patch objective: a linear head on each projected vision token ``z_p`` (the text model's input at
image position ``p``) predicts three labels of patch ``p`` and its pixel mask from the scene's ground
truth,

    L_patch = mean_p [ CE(colour_p) + CE(shape_p) + CE(corner_p) + mask_weight · BCE(m_p) ] / 4,

``colour_p`` ∈ {background} ∪ colours, ``shape_p`` ∈ {background} ∪ shapes and ``corner_p`` ∈
{background} ∪ corners (the quadrant of ``p`` if an object covers it). The object covering ``p`` is
the one with the most pixels in it (at least one). ``m_p`` ∈ {0, 1}^(patch_size²) marks which of the
patch's pixels some object covers (BCE averaged over them): small circles and squares differ only in
how their edges cut the patches, and the mask makes each token carry that. The head is not part of
the saved model.

Held-out accuracy is measured by greedy generation of the checkpoint as saved and reloaded
(:func:`evaluate`).
"""

from __future__ import annotations

import math
import os
import shutil
import string
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vlmattn.images.synthetic import COLOURS, SHAPES, draw
from vlmattn.models import shapes_task as task
from vlmattn.models.toy import ToySpec, build_toy, known_settings, save
from vlmattn.progress import progress

from ..tables import atomic_target

TRAINED_TOY = ToySpec(image_size=48, patch_size=6, vision_layers=3, text_layers=2)


@dataclass(frozen=True)
class TrainSpec:
    """Training recipe. ``steps``/``patch_steps`` count optimizer updates of ``batch_size`` scenes."""

    seed: int = 0
    model: ToySpec = TRAINED_TOY
    scene: task.SceneSpec = field(default_factory=task.SceneSpec)
    # Side at which scenes are drawn before the processor resizes them to the model's input, as the
    # pipeline's synthetic images (``images.synthetic.size``) are.
    render_size: int = 224
    batch_size: int = 32
    patch_steps: int = 1000
    steps: int = 1000
    lr: float = 2e-3
    patch_lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    patch_weight: float = 1.0
    mask_weight: float = 1.0
    probe_weight: float = 1.0
    probe_layer: int = 0
    # Relative frequency of question types in training batches (shape, colour, count, position):
    # colour is learned first; telling small circles from squares and counting two same-coloured
    # shapes last.
    type_weights: tuple[float, float, float, float] = (1.5, 0.5, 1.5, 1.0)
    # Shape questions in training batches draw box sides with this ``SceneSpec.size_power``: the
    # smallest circles and squares are the hardest to tell apart (held-out scenes: ``scene``).
    shape_size_power: float = 2.0
    eval_every: int = 250
    heldout_per_type: int = 128
    heldout_seed: int = 1_000_003
    threads: int = 2

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainSpec:
        d = known_settings(cls, d, "training")
        if isinstance(d.get("model"), dict):
            d["model"] = ToySpec.from_dict(d["model"])
        if isinstance(d.get("scene"), dict):
            d["scene"] = task.SceneSpec(**d["scene"])
        if "type_weights" in d:
            d["type_weights"] = tuple(float(w) for w in d["type_weights"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Encoding


def _answer_words() -> list[str]:
    return [w for words in task.ANSWERS.values() for w in words]


def build(spec: TrainSpec):
    """Fresh ``(model, processor)``; every answer word (after "ASSISTANT:") is a single token."""
    return build_toy(spec.model, extra_text=[f"ASSISTANT: {w}" for w in _answer_words()])


def prompt(processor, question: str, answer: str | None = None) -> str:
    """Chat-template text of one image + ``question`` (and the assistant's ``answer`` if given)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is None:
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return processor.apply_chat_template(messages)


def encode(processor, examples: list[task.Example]) -> dict[str, torch.Tensor]:
    """Processor inputs of question + answer, with ``labels`` = answer tokens (``-100`` elsewhere).

    The answer ``" word</s>"`` is the last ``k`` non-pad tokens (right padding); ``k`` is found by
    tokenizing the answer alone and checked against the prompt's own tokenization.
    """
    texts = [prompt(processor, e.question, e.answer) for e in examples]
    batch = processor(images=[e.image for e in examples], text=texts, return_tensors="pt", padding=True)
    labels = torch.full_like(batch["input_ids"], -100)
    lengths = batch["attention_mask"].sum(1)
    for i, e in enumerate(examples):
        k = len(processor.tokenizer(" " + e.answer + processor.tokenizer.eos_token, add_special_tokens=False).input_ids)
        n = int(lengths[i])
        labels[i, n - k : n] = batch["input_ids"][i, n - k : n]
    return {**batch, "labels": labels}


def check_prompt_alignment(processor, example: task.Example) -> None:
    """Raise unless the training sequence starts with exactly the inference prompt's tokens."""
    enc = encode(processor, [example])
    full = enc["input_ids"][0]
    gen = processor(images=[example.image], text=[prompt(processor, example.question)], return_tensors="pt")
    n = gen["input_ids"].shape[1]
    if not torch.equal(full[:n], gen["input_ids"][0]) or int((enc["labels"][0] != -100).sum()) != len(full) - n:
        raise RuntimeError("training prompt does not match the inference prompt token for token")


def patch_truth(shapes, image_size: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch ground truth of the ``g×g`` patch grid (``g = image_size // patch_size``, row-major).

    Returns ``labels`` ``[3, g*g]`` long (colour, shape, corner; 0 = background) and ``masks``
    ``[g*g, patch_size²]`` float (1 where some object covers the pixel, row-major in the patch).
    """
    g = image_size // patch_size
    pixels = np.stack([np.asarray(draw([s], image_size).convert("L")) > 0 for s in shapes])  # [objects, S, S]
    blocks = pixels.reshape(len(shapes), g, patch_size, g, patch_size).transpose(0, 1, 3, 2, 4)
    blocks = blocks.reshape(len(shapes), g * g, patch_size * patch_size)
    cover = blocks.sum(-1)  # [objects, g*g] pixel counts
    owner = cover.argmax(0)
    occupied = cover.max(0) > 0
    colour = np.array([1 + list(COLOURS).index(s.colour) for s in shapes])[owner]
    shape = np.array([1 + SHAPES.index(s.label) for s in shapes])[owner]
    rows, cols = np.divmod(np.arange(g * g), g)
    corner = 1 + 2 * (rows >= g / 2) + (cols >= g / 2)  # 1 tl, 2 tr, 3 bl, 4 br
    labels = torch.as_tensor(np.stack([colour, shape, corner]) * occupied, dtype=torch.long)
    return labels, torch.as_tensor(blocks.any(0), dtype=torch.float32)


class PatchHead(torch.nn.Module):
    """Linear read-out of the projected vision tokens ``[B, N, D]`` -> three sets of logits + pixel mask."""

    def __init__(self, dim: int, patch_size: int, mask_weight: float = 1.0):
        super().__init__()
        self.sizes = (1 + len(COLOURS), 1 + len(SHAPES), 1 + len(task.CORNERS), patch_size * patch_size)
        self.mask_weight = mask_weight
        self.linear = torch.nn.Linear(dim, sum(self.sizes))

    def loss(self, z: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``z`` ``[B, N, D]``, ``targets`` ``[B, 3, N]``, ``masks`` ``[B, N, p²]`` -> the mean loss."""
        *logits, mask = self.linear(z).split(self.sizes, dim=-1)
        ce = sum(F.cross_entropy(lg.flatten(0, 1), targets[:, i].flatten()) for i, lg in enumerate(logits))
        return (ce + self.mask_weight * F.binary_cross_entropy_with_logits(mask, masks)) / 4


class SceneProbe(torch.nn.Module):
    """Linear read-out of the text model's hidden state ``h`` at the last prompt position.

    Whatever the question, predicts (BCE on ``σ(W·h)``) the scene's facts ``y`` = [which shapes are
    present (3), which colours (6), two objects (1), corner-rule answer per corner (4, undefined ones
    masked)] and, for position questions, which corner was asked (softmax, CE).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.n_facts = len(SHAPES) + len(COLOURS) + 1 + len(task.CORNERS)
        self.facts = torch.nn.Linear(dim, self.n_facts)
        self.asked = torch.nn.Linear(dim, len(task.CORNERS))

    @staticmethod
    def targets(examples: list[task.Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 14]`` facts (1 true, 0 false, -1 undefined) and ``[B]`` asked corner (-100 if none)."""
        code = {"yes": 1.0, "no": 0.0, None: -1.0}
        facts = [
            [float(any(s.label == x for s in e.shapes)) for x in SHAPES]
            + [float(any(s.colour == c for s in e.shapes)) for c in COLOURS]
            + [float(len(e.shapes) == 2)]
            + [code[task.corner_answer(e.shapes, c)] for c in task.CORNERS]
            for e in examples
        ]
        asked = [task.CORNERS.index(e.corner) if e.corner else -100 for e in examples]
        return torch.tensor(facts), torch.tensor(asked)

    def loss(self, h: torch.Tensor, facts: torch.Tensor, asked: torch.Tensor) -> torch.Tensor:
        known = facts >= 0
        loss = F.binary_cross_entropy_with_logits(self.facts(h)[known], facts[known])
        if (asked >= 0).any():
            loss = loss + F.cross_entropy(self.asked(h), asked, ignore_index=-100)
        return loss


def answer_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example mean next-token CE over the labelled tokens: ``[B, T, V]``, ``[B, T]`` -> ``[B]``."""
    lg, lb = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(lg.transpose(1, 2), lb, ignore_index=-100, reduction="none")
    mask = (lb != -100).float()
    return (ce * mask).sum(1) / mask.sum(1)


# ---------------------------------------------------------------------------------------------
# Evaluation by generation


def first_word(text: str) -> str:
    """First whitespace-separated word, lower-cased, punctuation stripped."""
    words = text.strip().split()
    return words[0].strip(string.punctuation).lower() if words else ""


def heldout_set(n_per_type: int, seed: int, size: int, scene: task.SceneSpec | None = None):
    """Fixed held-out examples: ``n_per_type`` of each question type (position: equal per corner);
    ``scene`` None is the default :class:`vlmattn.models.shapes_task.SceneSpec`."""
    scene = task.SceneSpec() if scene is None else scene
    rng = np.random.default_rng(seed)
    out = []
    for qtype in task.QUESTION_TYPES:
        for i in range(n_per_type):
            corner = task.CORNERS[i % len(task.CORNERS)] if qtype == "position" else None
            out.append(task.sample_example(rng, size, qtype, corner, scene))
    return out


@torch.no_grad()
def generate_answers(model, processor, examples: list[task.Example], batch_size: int = 64) -> list[str]:
    """Greedy answers (``max_new_tokens=3``), batched over examples sharing a question (no padding)."""
    out: dict[int, str] = {}
    by_question: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_question.setdefault(e.question, []).append(i)
    for question, idx in by_question.items():
        text = prompt(processor, question)
        for j in range(0, len(idx), batch_size):
            chunk = idx[j : j + batch_size]
            inputs = processor(images=[examples[i].image for i in chunk], text=[text] * len(chunk), return_tensors="pt")
            gen = model.generate(**inputs, do_sample=False, max_new_tokens=3)
            new = processor.batch_decode(gen[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            out.update(zip(chunk, new, strict=True))
    return [out[i] for i in range(len(examples))]


def score(examples: list[task.Example], answers: list[str]) -> dict[str, float]:
    """Accuracy per question type, plus ``"position/<corner>"`` per corner."""
    hits: dict[str, list[bool]] = {}
    for e, a in zip(examples, answers, strict=True):
        ok = first_word(a) == e.answer
        hits.setdefault(e.qtype, []).append(ok)
        if e.corner is not None:
            hits.setdefault(f"position/{e.corner}", []).append(ok)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def evaluate(
    model_dir: str | Path, n_per_type: int = 200, seed: int = 1_000_003, render_size: int = 224
) -> dict[str, float]:
    """Held-out accuracy of the checkpoint in ``model_dir`` loaded like the pipeline loads it.

    ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained``, greedy generation, first
    word of the decoded answer compared with the truth. Returns ``{question_type: accuracy}`` and
    ``{"position/<corner>": accuracy}``.
    """
    return score_checkpoint(model_dir, heldout_set(n_per_type, seed, render_size))


def score_checkpoint(model_dir: str | Path, examples: list[task.Example]) -> dict[str, float]:
    """:func:`score` of the greedy answers of the checkpoint in ``model_dir`` on ``examples``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    return score(examples, generate_answers(model, processor, examples))


# ---------------------------------------------------------------------------------------------
# Training


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10 % at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _sample_batch(rng, spec: TrainSpec):
    """``batch_size`` fresh examples with their :func:`patch_truth` labels ``[B, 3, N]`` and masks ``[B, N, p²]``."""
    w = np.asarray(spec.type_weights, dtype=float)
    qtypes = rng.choice(len(task.QUESTION_TYPES), size=spec.batch_size, p=w / w.sum())
    shape_scene = replace(spec.scene, size_power=spec.shape_size_power)
    examples = [
        task.sample_example(rng, spec.render_size, qtype, spec=shape_scene if qtype == "shape" else spec.scene)
        for qtype in (task.QUESTION_TYPES[q] for q in qtypes)
    ]
    truth = [patch_truth(e.shapes, spec.model.image_size, spec.model.patch_size) for e in examples]
    return examples, torch.stack([t for t, _ in truth]), torch.stack([m for _, m in truth])


def train(
    spec: TrainSpec,
    out_dir: str | Path,
    report_csv: str | Path | None = None,
    report_png: str | Path | None = None,
) -> pd.DataFrame:
    """Train per ``spec``, save the checkpoint to ``out_dir`` and return the training report.

    Report rows (tidy): ``step, question_type, loss, heldout_accuracy`` every ``eval_every`` joint
    steps; ``loss`` is the mean training answer loss of that type since the previous row
    (``question_type == "patch"``: the per-patch objective). Outputs are written atomically.
    """
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="vlmattn-train-") as tmp:
            model, processor, report = _fit(spec, Path(tmp))
        _save_atomic(model, processor, spec, report, out_dir)
    finally:
        torch.set_num_threads(threads)
    if report_csv is not None:
        _write_atomic(Path(report_csv), lambda p: report.to_csv(p, index=False))
    if report_png is not None:
        _write_atomic(Path(report_png), lambda p: plot_report(report, p))
    return report


def _fit(spec: TrainSpec, tmp: Path):
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    model, processor = build(spec)
    head = PatchHead(model.config.text_config.hidden_size, spec.model.patch_size, spec.mask_weight)
    probe = SceneProbe(model.config.text_config.hidden_size)
    heldout = heldout_set(spec.heldout_per_type, spec.heldout_seed, spec.render_size, spec.scene)
    check_prompt_alignment(processor, heldout[0])

    projected: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: projected.append(o))
    layer = model.model.language_model.layers[spec.probe_layer]
    hook2 = layer.register_forward_hook(lambda m, i, o: hidden.append(o[0] if isinstance(o, tuple) else o))
    rows: list[dict] = []
    window: dict[str, list[float]] = {}
    started = time.time()
    total = spec.patch_steps + spec.steps
    bar = progress(total=total, desc="train", unit="step")
    try:
        # Stage 1: vision tower + projector on the per-patch objective.
        vision = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
        opt = torch.optim.AdamW([*vision, *head.parameters()], lr=spec.patch_lr, weight_decay=spec.weight_decay)
        model.train()
        for step in range(spec.patch_steps):
            _set_lr(opt, spec.patch_lr * _lr_factor(step, spec.patch_steps, spec.warmup))
            examples, targets, masks = _sample_batch(rng, spec)
            pixels = processor.image_processor([e.image for e in examples], return_tensors="pt")["pixel_values"]
            projected.clear()
            model.model.get_image_features(pixel_values=pixels)
            loss = head.loss(projected[-1], targets, masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
            bar.set_postfix(patch=f"{loss.item():.3f}", refresh=False)

        # Stage 2: everything, on answers + per-patch objective.
        params = [*model.parameters(), *head.parameters(), *probe.parameters()]
        opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
        for step in range(1, spec.steps + 1):
            _set_lr(opt, spec.lr * _lr_factor(step - 1, spec.steps, spec.warmup))
            examples, targets, masks = _sample_batch(rng, spec)
            batch = encode(processor, examples)
            labels = batch.pop("labels")
            projected.clear()
            hidden.clear()
            out = model(**batch, use_cache=False)
            per_example = answer_losses(out.logits, labels)
            patch = head.loss(projected[-1], targets, masks)
            loss = per_example.mean() + spec.patch_weight * patch
            if spec.probe_weight:
                last = (labels != -100).int().argmax(1) - 1  # last prompt position
                h = hidden[-1][torch.arange(len(examples)), last]
                probed = probe.loss(h, *SceneProbe.targets(examples))
                loss = loss + spec.probe_weight * probed
                window.setdefault("probe", []).append(probed.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for e, lv in zip(examples, per_example.tolist(), strict=True):
                window.setdefault(e.qtype, []).append(lv)
                if e.corner is not None:
                    window.setdefault(f"position/{e.corner}", []).append(lv)
            window.setdefault("patch", []).append(patch.item())
            bar.update()
            bar.set_postfix(answer=f"{per_example.mean().item():.3f}", patch=f"{patch.item():.3f}", refresh=False)
            if step % spec.eval_every == 0 or step == spec.steps:
                acc = _heldout_accuracy(model, processor, heldout, tmp)
                model.train()
                for key in sorted(window, key=_report_order):
                    rows.append(
                        {
                            "step": step,
                            "question_type": key,
                            "loss": float(np.mean(window[key])),
                            "heldout_accuracy": acc.get(key, float("nan")),
                        }
                    )
                window = {}
                bar.write(
                    f"step {step} ({time.time() - started:.0f}s): "
                    + " ".join(f"{k}={acc[k]:.2f}" for k in sorted(acc, key=_report_order))
                )
    finally:
        hook.remove()
        hook2.remove()
        bar.close()
    model.eval()
    return model, processor, pd.DataFrame(rows, columns=["step", "question_type", "loss", "heldout_accuracy"])


def _report_order(key: str) -> tuple[int, str]:
    head = key.split("/")[0]
    order = [*task.QUESTION_TYPES, "patch", "probe"]
    return (order.index(head) if head in order else len(order), key)


def _set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def _heldout_accuracy(model, processor, heldout, tmp: Path) -> dict[str, float]:
    """Save, reload as the pipeline does, and score greedy answers on ``heldout``."""
    ckpt = tmp / "eval"
    shutil.rmtree(ckpt, ignore_errors=True)
    model.eval()
    save(model, processor, ckpt)
    return score_checkpoint(ckpt, heldout)


# ---------------------------------------------------------------------------------------------
# Outputs


def _save_atomic(model, processor, spec: TrainSpec, report: pd.DataFrame, out_dir: Path) -> None:
    """Save into a sibling temp directory, then swap it in with renames."""
    import json

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save(model, processor, tmp)
        final = report[report.step == report.step.max()] if len(report) else report
        meta = {
            "train_spec": spec.to_dict(),
            "heldout_accuracy": {r.question_type: r.heldout_accuracy for r in final.itertuples()
                                 if r.heldout_accuracy == r.heldout_accuracy},
        }
        (tmp / "training.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        old = None
        if out_dir.exists():
            old = out_dir.parent / f"{tmp.name}.old"
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it onto ``path``."""
    tmp = atomic_target(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def plot_report(report: pd.DataFrame, png: str | Path) -> None:
    """Two panels over steps: training loss and held-out accuracy per question type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for key in sorted(report.question_type.unique(), key=_report_order):
        d = report[report.question_type == key]
        style = dict(lw=1.0, ls="--") if "/" in key else dict(lw=2.0)
        ax_loss.plot(d.step, d.loss, label=key, **style)
        if d.heldout_accuracy.notna().any():
            ax_acc.plot(d.step, d.heldout_accuracy, label=key, **style)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy (greedy)", ylim=(0, 1.02), title="held-out accuracy")
    ax_acc.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax_loss.legend(fontsize=7, ncol=2)
    fig.savefig(png, dpi=120, format="png")
    plt.close(fig)
