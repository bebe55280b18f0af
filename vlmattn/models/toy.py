"""A tiny LLaVA-1.5-architecture model built offline: CLIP vision tower + Llama text model.

Everything a real ``llava-hf/llava-1.5-*`` directory holds is produced here and saved with
``save_pretrained``: config, weights, a byte-level BPE tokenizer trained locally with ``tokenizers``,
a ``CLIPImageProcessor`` and a ``LlavaProcessor`` with the LLaVA-1.5 chat template. Loading it back
goes through ``AutoProcessor`` / ``AutoModelForImageTextToText`` like any checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

# LLaVA-1.5's conversation format: "USER: <image>\n{text} ASSISTANT:"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

# Words the toy task uses; the tokenizer learns each as one token.
BASE_CORPUS = [
    "USER: ASSISTANT:",
    "What shape is in the image?",
    "What colour is the shape?",
    "How many shapes are there?",
    "Is there anything in the top left corner?",
    "Is there anything in the top right corner?",
    "Is there anything in the bottom left corner?",
    "Is there anything in the bottom right corner?",
    "triangle square circle red green blue yellow white purple",
    "zero one two three four yes no Yes No",
]


def known_settings(cls, d: dict | None, what: str) -> dict:
    """A copy of ``d`` (None: empty) after checking that every key is a field of the dataclass ``cls``;
    ValueError naming the unknown ``what`` settings otherwise."""
    d = dict(d or {})
    unknown = set(d) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {what} settings: {sorted(unknown)}")
    return d


@dataclass(frozen=True)
class ToySpec:
    """Sizes of the toy model. ``n_kv_heads < n_heads`` gives grouped-query attention."""

    seed: int = 0
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    vocab_size: int = 512
    max_positions: int = 512

    @classmethod
    def from_dict(cls, d: dict | None) -> ToySpec:
        return cls(**known_settings(cls, d, "toy model"))

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(extra_text: list[str] | None = None, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the task corpus (deterministic), BOS prepended like Llama's."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = BASE_CORPUS + sorted(set(extra_text or []))
    tok.train_from_iterator(corpus * 8, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=4096,
    )


def build_processor(tokenizer, spec: ToySpec) -> LlavaProcessor:
    """CLIP-style preprocessing (resize shortest edge, centre crop) and the LLaVA-1.5 chat template."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=True,
        do_resize=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )


def build_model(spec: ToySpec, tokenizer) -> LlavaForConditionalGeneration:
    """Random-initialised LLaVA with the given sizes (seeded, so the weights are reproducible)."""
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=4 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def build_toy(spec: ToySpec, extra_text: list[str] | None = None):
    """``(model, processor)`` for ``spec``; ``extra_text`` adds words to the tokenizer's corpus."""
    tokenizer = build_tokenizer(extra_text, spec.vocab_size)
    return build_model(spec, tokenizer), build_processor(tokenizer, spec)


def save(model, processor, out_dir: str | Path) -> None:
    """``save_pretrained`` both into ``out_dir`` (a LLaVA checkpoint directory)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
