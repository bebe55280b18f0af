"""Training of a :class:`~vlmattn.pruning.learned.LearnedPruner` on a frozen model and the shapes task
(:mod:`vlmattn.models.shapes_task`), on CPU in minutes.

Each step draws ``batch_size`` fresh scenes (question types in turn, drawn at ``render_size`` as the
pipeline's images are), encodes question + answer as the model was trained (:func:`vlmattn.models.train.encode`)
and minimises

    L = mean_b CE_b + budget_weight · mean_b (mean_v s_b,v − keep_ratio)²

``CE_b``: the answer tokens' cross-entropy of the model with the vision tokens weighted by the Gumbel keep
mask from each pruner layer on (:class:`~vlmattn.pruning.learned.PrunerSession`, ``mode="train"``),
``s``: the mask's soft probabilities (of the last pruner layer: the share finally kept). Only the pruner's
parameters (and a learnable residual weight) are trained, with AdamW. Deterministic from ``seed`` at a fixed
thread count.

Report rows every ``log_every`` steps: ``step, task_loss, budget_loss, keep_share, attn_weight, seconds``
(means over the steps since the previous row; ``keep_share``: the hard mask's kept share; ``attn_weight``:
the residual weight w after the step, mean over the pruner's layers, NaN without the residual; ``seconds``:
elapsed wall time). The pruner's gradient is clipped to norm 1 before each AdamW step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from ..progress import progress
from .learned import LearnedPruner, PrunerSession, PrunerSpec, prompt_masks

REPORT_COLUMNS = ["step", "task_loss", "budget_loss", "keep_share", "attn_weight", "seconds"]


@dataclass(frozen=True)
class PrunerTraining:
    """Training settings (``pruning.learned.train`` in the config)."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.01
    keep_ratio: float = 128 / 576
    budget_weight: float = 4.0
    tau: float = 1.0
    log_every: int = 25
    render_size: int = 224

    @classmethod
    def from_dict(cls, d: dict) -> PrunerTraining:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown pruner training settings: {sorted(unknown)}")
        return cls(**d)


def training_batch(rng: np.random.Generator, processor, image_token_id: int, batch_size: int, render_size: int,
                   first: int) -> tuple[dict, torch.Tensor, tuple]:
    """``(inputs, labels, (vision, text_rows, question))`` of ``batch_size`` fresh scenes whose question types
    cycle through :data:`~vlmattn.models.shapes_task.QUESTION_TYPES` starting at index ``first``."""
    from ..models import shapes_task as task
    from ..models.train import encode

    types = task.QUESTION_TYPES
    examples = [task.sample_example(rng, render_size, types[(first + i) % len(types)]) for i in range(batch_size)]
    batch = encode(processor, examples)
    labels = batch.pop("labels")
    prompt_lengths = (labels != -100).int().argmax(1)
    return batch, labels, prompt_masks(batch["input_ids"], batch["attention_mask"], image_token_id, prompt_lengths)


def train_pruner(model, processor, spec: PrunerSpec, training: PrunerTraining, *, show_progress: bool = True
                 ) -> tuple[LearnedPruner, pd.DataFrame]:
    """Train a fresh pruner of ``spec`` on the frozen ``model`` (LLaVA family, the project's attention) and
    return it (eval mode) with its report (module docstring)."""
    from ..models.train import answer_losses

    if not 0 < training.keep_ratio < 1:
        raise ValueError(f"keep_ratio must lie in (0, 1), got {training.keep_ratio}")
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    gumbel = torch.Generator().manual_seed(training.seed)
    pruner = LearnedPruner(spec).train()
    with torch.no_grad():  # start at the target share: logit(keep_ratio) on every token
        for head in pruner.heads.values():
            head.mlp[-1].bias.fill_(float(np.log(training.keep_ratio / (1 - training.keep_ratio))))
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    opt = torch.optim.AdamW([p for p in pruner.parameters() if p.requires_grad], lr=training.lr,
                            weight_decay=training.weight_decay)
    last = max(spec.layers)
    rows, window = [], {"task_loss": [], "budget_loss": [], "keep_share": []}
    started = time.perf_counter()
    bar = progress(range(1, training.steps + 1), desc="train pruner", unit="step", disable=not show_progress)
    try:
        for step in bar:
            batch, labels, (vision, text_rows, question) = training_batch(
                rng, processor, model.config.image_token_id, training.batch_size, training.render_size, step)
            with PrunerSession(model, pruner, vision, text_rows, question, mode="train", tau=training.tau,
                               generator=gumbel) as session:
                out = model(**batch, use_cache=False)
            task_loss = answer_losses(out.logits, labels).mean()
            budget_loss = (session.soft[last].mean(1) - training.keep_ratio).pow(2).mean()
            loss = task_loss + training.budget_weight * budget_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(pruner.parameters(), 1.0)
            opt.step()
            window["task_loss"].append(task_loss.item())
            window["budget_loss"].append(budget_loss.item())
            window["keep_share"].append(float(session.kept(last).float().mean()))
            if step % training.log_every == 0 or step == training.steps:
                weights = pruner.residual_weights()
                rows.append({"step": step, **{k: float(np.mean(v)) for k, v in window.items()},
                             "attn_weight": float(np.mean(list(weights.values()))) if spec.use_attn_residual
                             else float("nan"),
                             "seconds": time.perf_counter() - started})
                window = {k: [] for k in window}
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(task=f"{rows[-1]['task_loss']:.3f}", kept=f"{rows[-1]['keep_share']:.2f}",
                                    refresh=False)
    finally:
        for p, g in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(g)
    return pruner.eval(), pd.DataFrame(rows, columns=REPORT_COLUMNS)
