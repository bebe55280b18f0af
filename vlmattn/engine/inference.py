"""Run a VLM on a batch of (image, question) with attention capture and assemble one :class:`AttentionSample` each."""

from __future__ import annotations

import hashlib
import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import transformers
from PIL import Image

from .. import __version__
from ..errors import InputError, ModelError
from ..images.convert import to_rgb
from ..store import AttentionSample, settings_json
from .adapters import Adapter, get_adapter
from .capture import CAPTURE_IMPL, AttentionRecorder, CaptureError, RolloutAccumulator, recording, rolling_out
from .capture import register as register_capture
from .vision import VISION_IMPL, VisionRecorder, concat_layouts, instrument, split_by_sample
from .vision import recording as vision_recording
from .vision import register as register_vision

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PREFILL_MODES = ("last", "text_after_image", "all_text", "all")
log = logging.getLogger("vlmattn")


@dataclass
class LoadedModel:
    model_id: str
    path: str
    family: str
    dtype: str
    model: torch.nn.Module
    processor: object
    adapter: Adapter

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _brief(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300]}" if msg else type(e).__name__


def load_model(model_id: str, family: str, path: str, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """Load a checkpoint (local dir or hub id) through the Auto classes and instrument it.

    The language model's attention is switched to :data:`CAPTURE_IMPL` and the vision tower's to
    :data:`VISION_IMPL`; both return SDPA's output, so generation is unchanged.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    from .processors import load_processor

    adapter = get_adapter(family)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - any loading failure is reported with the model named
        raise ModelError(f"model {model_id!r}: cannot load a checkpoint from {path!r} ({_brief(e)})") from e
    if config.model_type not in adapter.model_types:
        from .adapters import ADAPTERS

        owner = [f for f, a in ADAPTERS.items() if config.model_type in a.model_types]
        hint = f"use family {owner[0]!r}" if owner else f"supported families: {', '.join(sorted(ADAPTERS))}"
        raise ModelError(
            f"model {model_id!r}: checkpoint {path!r} is of type {config.model_type!r}, not family {family!r} ({hint})"
        )
    try:
        processor = load_processor(path)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {model_id!r}: cannot load the processor from {path!r} ({_brief(e)})") from e
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=DTYPES[dtype]).to(device).eval()
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {model_id!r}: cannot load the weights from {path!r} ({_brief(e)})") from e
    try:
        # the attention functions are registered with transformers here, on first use
        model.set_attn_implementation({"text_config": register_capture(), "vision_config": register_vision()})
        instrument(adapter.vision_attention_modules(model))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {model_id!r}: its attention cannot be instrumented ({_brief(e)})") from e
    impls = (model.config.get_text_config()._attn_implementation, model.config.vision_config._attn_implementation)
    if impls != (CAPTURE_IMPL, VISION_IMPL):
        raise ModelError(f"model {model_id!r}: its attention cannot be instrumented (implementations {impls})")
    return LoadedModel(model_id, str(path), family, dtype, model, processor, adapter)


def prefill_positions(mode: str, n_tokens: int, image_index: np.ndarray) -> np.ndarray:
    """Prompt positions whose prefill rows are stored, ``[R]`` sorted.

    ``image_index``: the prompt positions of image tokens (a CLS token fed to the LLM included).
    ``last``: the final prompt token; ``text_after_image``: every token after the last image token;
    ``all_text``: every other token; ``all``: every token.
    """
    pos = np.arange(n_tokens)
    if mode == "last":
        return pos[-1:]
    if mode == "text_after_image":
        return pos[pos > (image_index.max() if len(image_index) else -1)]
    if mode == "all_text":
        return np.setdiff1d(pos, image_index)
    if mode == "all":
        return pos
    raise ValueError(f"prefill_rows must be one of {PREFILL_MODES}, got {mode!r}")


def prefill_layer_selection(layers: Sequence[int] | None, n_layers: int) -> np.ndarray:
    """Decoder layers whose prefill rows are stored, ``[L']`` int64 sorted ascending.

    ``layers``: 0-based decoder layers (``extraction.prefill_layers``), or None for all ``n_layers``
    (``arange(L)``). Raises ValueError for an empty list, a non-integer, a negative or repeated layer
    or one past ``n_layers − 1``.
    """
    if layers is None:
        return np.arange(n_layers, dtype=np.int64)
    what = (f"extraction.prefill_layers must list distinct decoder layers 0 … {n_layers - 1} "
            f"(the model has {n_layers})")
    layers = list(layers)
    if not layers:
        raise ValueError(f"{what}, got an empty list")
    bad = [x for x in layers if isinstance(x, bool) or not isinstance(x, numbers.Integral)]
    if bad:
        raise ValueError(f"{what}, got non-integer {bad[0]!r}")
    out = [int(x) for x in layers]
    outside = [x for x in out if not 0 <= x < n_layers]
    if outside:
        raise ValueError(f"{what}, got {outside[0]}")
    repeated = sorted({x for x in out if out.count(x) > 1})
    if repeated:
        raise ValueError(f"{what}, got layer {repeated[0]} more than once")
    return np.array(sorted(out), dtype=np.int64)


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(settings_json(settings).encode()).hexdigest()[:16]


def model_inputs(lm: LoadedModel, image: Image.Image, question: str):
    """The model's inputs for one (image, question): the adapter's chat prompt through the processor
    (batch of 1) on the model's device, floating-point pixels in the model's dtype. Raises
    :class:`InputError` for an image smaller than one patch or one the processor rejects."""
    patch = getattr(lm.model.config.vision_config, "patch_size", 1)
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)  # InternViT: [p, p]
    if min(image.size) < patch:
        raise InputError(f"model {lm.model_id!r}: image of {image.size[0]}x{image.size[1]} pixels is smaller than "
                         f"one {patch}-pixel patch of its vision encoder")
    try:
        inputs = lm.adapter.build_inputs(lm.processor, image, question).to(lm.device)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"model {lm.model_id!r}: the processor rejected the image or prompt ({_brief(e)})") from e
    return _pixels_in_model_dtype(lm, inputs)


def _pixels_in_model_dtype(lm: LoadedModel, inputs):
    """``inputs`` with floating-point ``pixel_values`` cast to the model's dtype."""
    if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
        inputs["pixel_values"] = inputs["pixel_values"].to(DTYPES[lm.dtype])
    return inputs


def capture_attention(lm: LoadedModel, image: Image.Image, question: str, *, meta: dict | None = None,
                      **settings) -> AttentionSample:
    """:func:`capture_batch` of one sample (``settings`` as there)."""
    return capture_batch(lm, [image], [question], metas=None if meta is None else [meta], **settings)[0]


def batch_inputs(lm: LoadedModel, images: Sequence[Image.Image], questions: Sequence[str]):
    """The model's inputs for a batch of (image, question): the adapter's prompts, left-padded, on the
    model's device, floating-point pixels in the model's dtype (:func:`model_inputs` for one)."""
    try:
        inputs = lm.adapter.build_batch_inputs(lm.processor, list(images), list(questions)).to(lm.device)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"model {lm.model_id!r}: the processor rejected a batch of {len(images)} samples "
                         f"({_brief(e)})") from e
    return _pixels_in_model_dtype(lm, inputs)


def _eos_ids(lm: LoadedModel) -> set[int]:
    eos = lm.model.generation_config.eos_token_id
    return set() if eos is None else {int(e) for e in np.atleast_1d(eos)}


def generated_length(ids: np.ndarray, eos: set[int]) -> int:
    """Tokens of a batch row's continuation ``ids [S]`` that belong to it: up to and including its first
    EOS (what generating it alone returns), all ``S`` without one."""
    hit = np.flatnonzero(np.isin(ids, list(eos))) if eos else np.zeros(0, np.int64)
    return int(hit[0]) + 1 if hit.size else len(ids)


@torch.no_grad()
def capture_batch(
    lm: LoadedModel,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    *,
    max_new_tokens: int,
    prefill_rows: str = "last",
    prefill_layers: Sequence[int] | None = None,
    seed: int = 0,
    vision_encoder: bool = True,
    vision_full: bool = False,
    vision_rollout: bool = True,
    llm_rollout: bool = False,
    metas: Sequence[dict] | None = None,
) -> list[AttentionSample]:
    """Greedy generation of a batch of samples in one ``generate`` call, with row-selective capture.

    Sample ``b`` is ``(images[b], questions[b])``; ``B = len(images)`` prompts are left-padded
    (:func:`batch_inputs`). Its decode row ``t`` (``[L, H, N_b + t]``) is the attention of the query
    that predicts its generated token ``t``: row 0 is its last prompt token in prefill, row ``t > 0``
    the decode step fed token ``t-1``. Keys are the sample's own positions (the padding's columns
    removed: they hold weight 0), and rows stop at its first EOS (a finished sample keeps running in
    the batch; nothing past its end is stored). So each sample is what a batch of one gives, up to
    float rounding of the batched matrix products. With ``vision_encoder``, the vision tower's
    per-patch summaries are recorded as well (see :mod:`vlmattn.engine.vision`); ``vision_full`` also
    keeps its full ``[L, H, T, T]`` weights per image, ``vision_rollout=False`` skips the rollout
    (about one more weight computation per full-attention encoder layer).

    ``prefill_rows`` picks the prompt positions whose prefill rows are stored (:func:`prefill_positions`),
    ``prefill_layers`` the decoder layers they are stored at (None: every layer; otherwise distinct 0-based
    layers, stored sorted ascending, see :func:`prefill_layer_selection`): ``prefill [L', H, R, N]``, the
    layers in ``prefill_layers [L']``. The decode rows are kept at every layer either way.

    ``llm_rollout`` adds the language model's attention rollout (:func:`llm_rollout_rows`):
    ``rollout_decode [T, N + T − 1]`` and ``rollout_prefill [R, N]``, from one more forward pass per sample.
    ``metas[b]`` is added to sample ``b``'s attributes.
    """
    n_batch = len(images)
    if n_batch == 0 or len(questions) != n_batch or (metas is not None and len(metas) != n_batch):
        raise ValueError(f"a batch needs one question (and meta) per image: {n_batch} images, "
                         f"{len(questions)} questions")
    torch.manual_seed(seed)
    singles = [model_inputs(lm, im, q) for im, q in zip(images, questions, strict=True)]
    inputs = singles[0] if n_batch == 1 else batch_inputs(lm, images, questions)
    width_in = int(inputs["input_ids"].shape[1])
    ns = [int(x["input_ids"].shape[1]) for x in singles]
    pads = [width_in - n for n in ns]
    for b, x in enumerate(singles):
        ids_b = inputs["input_ids"][b, pads[b]:]
        mask_b = inputs["attention_mask"][b] if "attention_mask" in inputs else None
        if not torch.equal(ids_b, x["input_ids"][0]) or (mask_b is not None and mask_b[pads[b]:].min() < 1):
            raise ModelError(f"model {lm.model_id!r}: the batched prompt of sample {b} is not its own prompt "
                             "left-padded (the processor does not pad on the left)")
    text_cfg = lm.model.config.get_text_config()
    max_pos = getattr(text_cfg, "max_position_embeddings", None)
    if max_pos is not None and max(ns) + max_new_tokens > max_pos:
        raise InputError(
            f"model {lm.model_id!r}: prompt of {max(ns)} tokens + {max_new_tokens} new exceeds the context of {max_pos}"
        )
    layouts = []
    for im, x in zip(images, singles, strict=True):
        try:
            layouts.append(lm.adapter.vision_layout(lm.model, lm.processor, x, im.size))
        except ValueError as e:
            raise ModelError(f"model {lm.model_id!r}: cannot lay out its vision tokens ({_brief(e)})") from e
    stored = [prefill_positions(prefill_rows, n, lay.image_positions) for n, lay in zip(ns, layouts, strict=True)]
    expected = int(text_cfg.num_hidden_layers)
    try:
        layers = prefill_layer_selection(prefill_layers, expected)
    except ValueError as e:
        raise InputError(f"model {lm.model_id!r}: {e}") from None
    if prefill_rows == "all":
        n_heads, n = text_cfg.num_attention_heads, max(ns)
        size = len(layers) * n_heads * n * n * 4
        log.warning(
            "model %r: prefill_rows 'all' keeps L·H·N² = %d·%d·%d² weights, %s bytes in float32 "
            "(half in float16 on disk)",
            lm.model_id, len(layers), n_heads, n, f"{size:,}",
        )
    # per sample: recorded prompt positions (stored rows and the last one), padded to a common count
    recorded = [np.union1d(s, [n - 1]) for s, n in zip(stored, ns, strict=True)]
    width_rows = max(len(r) for r in recorded)
    rows = np.stack([np.pad(r, (0, width_rows - len(r)), mode="edge") + p for r, p in zip(recorded, pads, strict=True)])
    last = [int(np.searchsorted(r, n - 1)) for r, n in zip(recorded, ns, strict=True)]
    recorder = AttentionRecorder(prefill_positions=torch.as_tensor(rows),
                                 prefill_layers=None if prefill_layers is None else frozenset(layers.tolist()),
                                 other_rows=torch.tensor(last)[:, None])
    vrec = patch_layouts = None
    if vision_encoder:
        vision_modules = lm.adapter.vision_attention_modules(lm.model)
        patch_layouts = [lm.adapter.patch_layout(lm.model, lm.processor, x, im.size)
                         for im, x in zip(images, singles, strict=True)]
        vrec = VisionRecorder(concat_layouts(patch_layouts), n_layers=len(vision_modules), store_full=vision_full,
                              rollout=vision_rollout)
    try:
        with recording(recorder), vision_recording(vrec):
            out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        visions = split_by_sample(vrec.result(), patch_layouts) if vrec is not None else [None] * n_batch
    except CaptureError as e:
        raise ModelError(f"model {lm.model_id!r}: attention capture failed ({e})") from e
    n_layers = len(recorder.prefill)
    n_run = int(out.shape[1]) - width_in
    if n_layers != expected or any(len(recorder.decode.get(k, [])) != n_run - 1 for k in range(n_layers)):
        raise ModelError(
            f"model {lm.model_id!r}: its attention cannot be captured ({n_layers} of {expected} language-model "
            "layers called the attention interface)"
        )
    eos = _eos_ids(lm)
    settings = {
        "max_new_tokens": max_new_tokens,
        "prefill_rows": prefill_rows,
        "prefill_layers": "all" if prefill_layers is None else layers.tolist(),
        "seed": seed,
        "dtype": lm.dtype,
        "vision_encoder": vision_encoder,
        "vision_full": vision_full,
        "vision_rollout": vision_rollout,
        "llm_rollout": llm_rollout,
    }
    steps = [generated_length(out[b, width_in:].cpu().numpy(), eos) for b in range(n_batch)]
    # per layer [B, H, R | 1, N_pad], and [L, S, B, H, N_pad + S - 1], on the CPU
    pre = [recorder.prefill[layer].cpu() for layer in range(n_layers)]
    dec = torch.stack([recorder.decode_rows(layer, width_in + max(n_run - 1, 0)) for layer in range(n_layers)])
    samples = []
    for b in range(n_batch):
        n, p, t_b = ns[b], pads[b], steps[b]
        gen = out[b, width_in : width_in + t_b].cpu()
        width = n + max(t_b - 1, 0)
        decode = torch.zeros(t_b, n_layers, pre[0].shape[1], width)
        for layer in range(n_layers):
            row = last[b] if recorder.keeps_all_rows(layer) else 0
            decode[0, layer, :, :n] = pre[layer][b, :, row, p:]
        if t_b > 1:
            decode[1:] = dec[:, : t_b - 1, b, :, p : p + width].transpose(0, 1)
        keep = torch.as_tensor(np.searchsorted(recorded[b], stored[b]))
        prefill = torch.stack([pre[layer][b][:, keep, p:] for layer in layers.tolist()])
        rollout_decode = rollout_prefill = None
        if llm_rollout:
            try:
                ids = torch.cat([singles[b]["input_ids"][0], gen[: max(t_b - 1, 0)].to(lm.device)])
                rollout_decode, rollout_prefill = llm_rollout_rows(lm, singles[b], ids, stored[b])
            except CaptureError as e:
                raise ModelError(f"model {lm.model_id!r}: language-model rollout failed ({e})") from e
        samples.append(_sample(lm, singles[b]["input_ids"][0].cpu(), gen, layouts[b], images[b], question=questions[b],
                               decode=decode, prefill=prefill, stored=stored[b], layers=layers, vision=visions[b],
                               rollout=(rollout_decode, rollout_prefill), meta=None if metas is None else metas[b],
                               settings=settings))
    return samples


def generated_token_fields(tokenizer, ids: np.ndarray) -> dict:
    """The :class:`AttentionSample` fields of the generated ids ``ids [T]`` (int): ``generated_ids [T]``
    int64, ``generated_tokens`` (each id decoded on its own, special tokens kept as their text) and
    ``generated_special [T]`` bool (the id is one of the tokenizer's ``all_special_ids``)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    return {
        "generated_ids": ids,
        "generated_tokens": tokenizer.batch_decode([[i] for i in ids.tolist()]),
        "generated_special": np.isin(ids, np.asarray(tokenizer.all_special_ids, np.int64)),
    }


def _sample(lm: LoadedModel, ids: torch.Tensor, gen: torch.Tensor, layout, image: Image.Image, *, question: str,
            decode: torch.Tensor, prefill: torch.Tensor, stored: np.ndarray, layers: np.ndarray, vision, rollout,
            meta: dict | None, settings: dict) -> AttentionSample:
    """One sample's :class:`AttentionSample` from its captured arrays (decode ``[T, L, H, N + T − 1]``,
    prefill ``[L', H, R, N]``) and provenance attributes."""
    tok = lm.processor.tokenizer
    attrs = {
        "model_id": lm.model_id,
        "model_path": lm.path,
        "family": lm.family,
        "dtype": lm.dtype,
        "seed": settings["seed"],
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "vlmattn_version": __version__,
        "settings_json": settings_json(settings),
        "settings_hash": settings_hash(settings),
        "question": question,
        "generated_text": tok.decode(gen, skip_special_tokens=True).strip(),
        **(meta or {}),
    }
    rollout_decode, rollout_prefill = rollout
    return AttentionSample(
        input_ids=ids.numpy(),
        input_tokens=tok.batch_decode([[i] for i in ids.tolist()]),
        **generated_token_fields(tok, gen.numpy()),
        spans=layout.spans,
        grid=layout.grids,
        token_boxes=layout.token_boxes,
        cls_positions=layout.cls_positions,
        piece_image=layout.piece_image,
        piece_kinds=layout.piece_kinds,
        marker_positions=layout.marker_positions,
        marker_kinds=layout.marker_kinds,
        image_size=np.array(image.size),
        decode=decode.numpy(),
        decode_key_len=np.arange(len(ids), len(ids) + len(gen)),
        prefill=prefill.numpy(),
        prefill_positions=stored,
        prefill_layers=layers,
        attrs=attrs,
        vision_encoder=vision,
        rollout_decode=None if rollout_decode is None else rollout_decode.numpy(),
        rollout_prefill=None if rollout_prefill is None else rollout_prefill.numpy(),
    )


def extended_inputs(inputs, ids: torch.Tensor) -> dict:
    """The processor's tensors of an ``N``-token prompt (batch of 1) extended to the ``M ≥ N`` token ids
    ``ids [M]`` (the prompt followed by tokens it generated): the same image inputs, an attention mask of
    ones, and every other per-token input (such as Qwen's ``mm_token_type_ids``) extended with 0 = text."""
    n, m = int(inputs["input_ids"].shape[1]), int(ids.shape[0])
    run = {}
    for k, v in inputs.items():
        if k == "input_ids":
            v = ids[None].to(v.device)
        elif k == "attention_mask":
            v = torch.ones(1, m, dtype=v.dtype, device=v.device)
        elif torch.is_tensor(v) and v.dim() == 2 and v.shape == (1, n):
            v = torch.cat([v, v.new_zeros(1, m - n)], dim=1)
        run[k] = v
    return run


@torch.no_grad()
def llm_rollout_rows(lm: LoadedModel, inputs, ids: torch.Tensor, prefill_positions: np.ndarray
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rollout rows of the language model over the prompt and the generated tokens but the last.

    ``inputs``: the processor's tensors of the ``N``-token prompt; ``ids`` ``[M]``, ``M = N + T − 1``:
    the prompt followed by the generated tokens except the last. One forward pass over the ``M``
    positions (same image inputs, attention mask of ones, per-token inputs such as Qwen's
    ``mm_token_type_ids`` extended with 0 = text, no cache) runs with a :class:`RolloutAccumulator`
    active and no recorder, so that it ends with ``R_L`` (``Ã_l = a·I + (1−a)·mean_h A_l``,
    ``R_l = Ã_l·R_{l−1}``, ``R_0 = I``, ``a`` = :data:`vlmattn.store.ROLLOUT_RESIDUAL`).

    Returns float32 on the CPU: ``decode [T, M]`` with row ``t`` = ``R_L[N − 1 + t, :]`` (the query
    that predicts generated token ``t``; zero past its own position), and ``prefill [R, N]`` =
    ``R_L[prefill_positions, :N]``.
    """
    n, m = int(inputs["input_ids"].shape[1]), int(ids.shape[0])
    run = extended_inputs(inputs, ids)
    n_layers = lm.model.config.get_text_config().num_hidden_layers
    acc = RolloutAccumulator(n_layers, m, lm.device, causal=lm.adapter.causal_prefill)
    with rolling_out(acc), vision_recording(None):
        lm.model(**run, use_cache=False, logits_to_keep=1)
    decode = acc.rows(np.arange(n - 1, m))
    prefill = acc.rows(prefill_positions)[:, :n]
    return decode, prefill


def open_image(path) -> Image.Image:
    """Open an image file as RGB, or raise :class:`InputError` naming it.

    Transparent parts are composited onto white, as the image processors do (:func:`to_rgb`).
    """
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except FileNotFoundError:
        raise InputError(f"image file not found: {path}") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"not a readable image: {path} ({type(e).__name__})") from e
