"""Tiny random-weight replicas of the Qwen VLM families, built offline from config objects.

Each replica is the real transformers architecture (``Qwen2VLForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``) at toy sizes, with a
byte-level BPE tokenizer trained locally (Qwen special tokens, no BOS), the PIL Qwen2-VL image
processor (``smart_resize`` + patchify, merged 2×2) and a Qwen-style chat template. Saved with
``save_pretrained``, a replica reloads through :func:`vlmattn.engine.processors.load_processor` and
``AutoModelForImageTextToText`` like a hub checkpoint. Grouped-query attention as in the real models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..engine.processors import image_only_processor
from .toy import BASE_CORPUS, known_settings

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL's conversation format, without the default system turn.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


@dataclass(frozen=True)
class ReplicaSpec:
    """Sizes of a replica. ``patch_size`` 0 means the family's own (14 for Qwen2/2.5-VL, 16 for Qwen3-VL).

    ``min_pixels`` / ``max_pixels`` bound the resized image area (smart_resize); ``window_tokens`` is
    Qwen2.5-VL's attention window side in merged tokens, ``full_attention_layers`` its full-attention
    blocks.
    """

    seed: int = 0
    patch_size: int = 0
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vocab_size: int = 512
    max_positions: int = 4096
    min_pixels: int = 28 * 28 * 4
    max_pixels: int = 28 * 28 * 256
    window_tokens: int = 2
    full_attention_layers: tuple[int, ...] = (1,)

    @classmethod
    def from_dict(cls, d: dict | None) -> ReplicaSpec:
        d = known_settings(cls, d, "replica model")
        if "full_attention_layers" in d:
            d["full_attention_layers"] = tuple(d["full_attention_layers"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(extra_text: list[str] | None = None, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE with the Qwen special tokens, trained on the task corpus (deterministic)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = BASE_CORPUS + ["user assistant system"] + sorted(set(extra_text or []))
    tok.train_from_iterator(corpus * 8, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        model_max_length=32768,
    )


def _patch_size(family: str, spec: ReplicaSpec) -> int:
    return spec.patch_size or (16 if family == "qwen3_vl" else 14)


def build_processor(family: str, tokenizer, spec: ReplicaSpec):
    """The family's processor class with the PIL Qwen2-VL image processor and no video processor."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    cls = {"qwen2_vl": Qwen2VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor, "qwen3_vl": Qwen3VLProcessor}[family]
    norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]} if family == "qwen3_vl" else {}
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
        patch_size=_patch_size(family, spec),
        merge_size=2,
        temporal_patch_size=2,
        **norm,
    )
    return image_only_processor(cls)(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=QWEN_CHAT_TEMPLATE)


def _token_ids(tokenizer) -> dict:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def build_model(family: str, spec: ReplicaSpec, tokenizer):
    """Random-initialised model of ``family`` (seeded, so the weights are reproducible)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    head_dim = spec.text_hidden // spec.text_heads
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]  # (t, h, w), like [16, 24, 24] of 64
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=4 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=spec.max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    patch = _patch_size(family, spec)
    if family == "qwen2_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope}
        vision = dict(
            depth=spec.vision_layers,
            embed_dim=spec.vision_hidden,
            hidden_size=spec.text_hidden,
            num_heads=spec.vision_heads,
            mlp_ratio=2,
            patch_size=patch,
        )
        cls_cfg, cls_model = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    elif family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope}
        vision = dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.text_hidden,
            patch_size=patch,
            window_size=spec.window_tokens * 2 * patch,
            fullatt_block_indexes=list(spec.full_attention_layers),
        )
        cls_cfg, cls_model = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    elif family == "qwen3_vl":
        text["head_dim"] = head_dim
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": mrope,
            "mrope_interleaved": True,
        }
        vision = dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.text_hidden,
            patch_size=patch,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        )
        cls_cfg, cls_model = Qwen3VLConfig, Qwen3VLForConditionalGeneration
    else:
        raise ValueError(f"no replica builder for family {family!r} (known: {', '.join(FAMILIES)})")
    config = cls_cfg(text_config=text, vision_config=vision, tie_word_embeddings=False, **_token_ids(tokenizer))
    torch.manual_seed(spec.seed)
    model = cls_model(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def build_replica(family: str, spec: ReplicaSpec | None = None, extra_text: list[str] | None = None):
    """``(model, processor)`` of ``family`` at the sizes of ``spec`` (a :class:`ReplicaSpec`, or for the
    tiled families a :class:`vlmattn.models.tiled.TiledSpec`)."""
    from . import tiled

    if family in tiled.FAMILIES:
        return tiled.build_tiled(family, spec, extra_text)
    spec = spec or ReplicaSpec()
    tokenizer = build_tokenizer(extra_text, spec.vocab_size)
    return build_model(family, spec, tokenizer), build_processor(family, tokenizer, spec)
