"""Hand-made :class:`AttentionSample` objects with chosen attention, for the metric tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vlmattn.metrics.options import metric_params
from vlmattn.store import AttentionSample, VisionEncoderAttention
from vlmattn.workflow import load_config

#: The smallest valid config (no metric listed).
MINIMAL = {"questions": {"q": {"text": "Hi?"}}, "models": {"m": {"family": "llava", "path": "x"}}}


def metric_cfg(name: str, **changes) -> dict:
    """What the pipeline passes to metric ``name`` when its block is ``changes``: the block validated
    with the schema's defaults filled in (and the sink rule, see :func:`metric_params`)."""
    return metric_params(name, load_config({**MINIMAL, "metrics": {name: changes}})["metrics"])


def grid_boxes(rows: int, cols: int, width: int, height: int) -> np.ndarray:
    """Pixel boxes ``[rows·cols, 4]`` tiling the image row-major."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    cw, ch = width / cols, height / rows
    return np.stack([c * cw, r * ch, (c + 1) * cw, (r + 1) * ch], axis=1).astype(np.float64)


def make_sample(
    vision,
    grid: tuple[int, int] | None = None,
    image_size: tuple[int, int] = (64, 64),
    n_before: int = 3,
    n_after: int = 4,
    boxes=(),
    labels=(),
    colours=None,
    tokens=None,
    rest: dict | None = None,
    vision_encoder: VisionEncoderAttention | None = None,
) -> AttentionSample:
    """A sample whose decode rows put ``vision [T, L, H, V]`` on the vision tokens.

    ``rest`` optionally maps ``text_before`` / ``text_after`` / ``generated`` to ``[T, L, H]`` masses
    spread evenly over those keys (the generated keys of row t are N … N+t−1).
    """
    vision = np.asarray(vision, np.float64)
    n_steps, n_layers, n_heads, n_vis = vision.shape
    rows, cols = grid or (int(round(np.sqrt(n_vis))),) * 2
    assert rows * cols == n_vis
    n = n_before + n_vis + n_after
    decode = np.zeros((n_steps, n_layers, n_heads, n + n_steps - 1))
    decode[..., n_before : n_before + n_vis] = vision
    for key, mass in (rest or {}).items():
        mass = np.asarray(mass, np.float64)
        if key == "text_before":
            decode[..., :n_before] += mass[..., None] / n_before
        elif key == "text_after":
            decode[..., n_before + n_vis : n] += mass[..., None] / n_after
        elif key == "generated":
            for t in range(1, n_steps):
                decode[t, ..., n : n + t] += mass[t][..., None] / t
        else:
            raise KeyError(key)
    w, h = image_size
    labels = list(labels)
    return AttentionSample(
        input_ids=np.arange(n),
        input_tokens=["t"] * n_before + ["<image>"] * n_vis + ["q"] * n_after,
        generated_ids=np.arange(n_steps),
        generated_tokens=list(tokens) if tokens is not None else [f"w{t}" for t in range(n_steps)],
        spans=np.array([[n_before, n_before + n_vis]]),
        grid=np.array([[rows, cols]]),
        token_boxes=grid_boxes(rows, cols, w, h),
        image_size=np.array([w, h]),
        decode=decode,
        decode_key_len=n + np.arange(n_steps),
        prefill=np.zeros((n_layers, n_heads, 0, n), np.float32),
        prefill_positions=np.zeros(0, np.int64),
        attrs={"image_id": "img", "question": "q?", "generated_text": "w"},
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=labels,
        colours=list(colours) if colours is not None else [""] * len(labels),
        vision_encoder=vision_encoder,
    )


def with_prefill(sample: AttentionSample, positions, vision) -> AttentionSample:
    """``sample`` with prefill rows at the prompt ``positions [R]``: row r of (layer l, head h) puts
    ``vision [L, H, R, V]`` on the vision tokens and the rest of its unit mass on key 0 (the first
    prompt token), so every stored row is a distribution over causal keys."""
    vision = np.asarray(vision, np.float64)
    positions = np.asarray(positions, np.int64)
    n = len(sample.input_ids)
    assert vision.shape[2] == len(positions) and vision.shape[3] == len(sample.vision_index)
    assert (vision.sum(-1) <= 1 + 1e-12).all()
    pre = np.zeros((*vision.shape[:3], n))
    pre[..., sample.vision_index] = vision
    pre[..., 0] += 1 - vision.sum(-1)
    return replace(sample, prefill=pre, prefill_positions=positions)


def encoder_attention(received, cls_attention=None, patch_grid: tuple[int, int] | None = None,
                      image_size: tuple[int, int] = (64, 64)) -> VisionEncoderAttention:
    """Vision-encoder summaries of one image with ``received [L, H, P]`` and, optionally, a CLS row
    ``cls_attention [L, H, P]``; patches tile the image row-major on ``patch_grid`` (default square)."""
    received = np.asarray(received, np.float64)
    n_layers, _, n_patches = received.shape
    rows, cols = patch_grid or (int(round(np.sqrt(n_patches))),) * 2
    assert rows * cols == n_patches
    cls = received[:, :, :0] if cls_attention is None else np.asarray(cls_attention, np.float64)
    return VisionEncoderAttention(
        patch_grid=np.array([[rows, cols]]),
        patch_spans=np.array([[0, n_patches]]),
        patch_boxes=grid_boxes(rows, cols, *image_size),
        patch_token=np.full(n_patches, -1),
        received=received,
        cls_attention=cls,
        rollout_received=np.zeros((n_layers, 0)),
        rollout_cls=np.zeros((n_layers, 0)),
        segment=np.zeros((n_layers, n_patches), np.int32),
        has_cls=cls_attention is not None,
    )


def one_hot(v: int, n: int) -> np.ndarray:
    x = np.zeros(n)
    x[v] = 1.0
    return x


def tile(p, n_steps: int = 1, n_layers: int = 1, n_heads: int = 1) -> np.ndarray:
    """The same map ``p [V]`` in every (step, layer, head): ``[T, L, H, V]``."""
    return np.broadcast_to(np.asarray(p, np.float64), (n_steps, n_layers, n_heads, len(p))).copy()


def plot_metric(name: str, frames, cfg: dict, out_dir) -> None:
    """Metric ``name``'s figures from per-sample tables ``frames`` through the jobs' own path: one Parquet
    shard file, the summary job (and its extra summaries), the plot job; files under ``out_dir``."""
    from pathlib import Path

    from vlmattn.metrics import jobs, summary_extras
    from vlmattn.tables import write_parquet

    out_dir = Path(out_dir)
    shard = out_dir / "tables" / name / "m" / "0.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(frames, shard)
    extras = {e: str(out_dir / "summaries" / f"{name}_{e}.parquet") for e in summary_extras(name)}
    summary = out_dir / "summaries" / f"{name}.csv"
    jobs.summary(name, [str(shard)], str(summary), extras)
    jobs.plot(name, str(summary), cfg, str(out_dir), extras)
