"""Tiny random-weight replicas of the tiled VLM families, built offline from config objects.

Each replica is the real transformers architecture and processor of its family at toy sizes, with
the family's tiling rule scaled down with the tile (so a replica tiles an image as the checkpoint
does, in fewer pixels): the same classes, the same processor code path, saved with
``save_pretrained`` and reloaded like a hub checkpoint.

* ``llava_next``: ``LlavaNextForConditionalGeneration`` (CLIP tower with CLS, Llama), the
  ``LlavaNextImageProcessorPil`` (base image resized to one tile + the best ``image_grid_pinpoints``
  resolution, padded and cut into tiles), LLaVA-1.5's chat template. The checkpoints' tile is 336 px
  of 14 px patches with pinpoints ``[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]``;
  the replica's is ``tile_size`` px of ``patch_size`` px patches with the pinpoints scaled by
  ``tile_size / 336``.
* ``llava_onevision``: ``LlavaOnevisionForConditionalGeneration`` (SigLIP, no CLS; Qwen2), the
  ``LlavaOnevisionImageProcessorPil`` (base image squashed to one tile, the best of the
  ``image_grid_pinpoints`` 1 … 6 × 1 … 6 tiles, padded and cut) and ``anyres_max_9``. The checkpoints: 384 px
  tiles of 14 px patches; the replica: ``tile_size`` px of ``patch_size`` px patches, the pinpoints
  scaled by ``tile_size / 384``.
* ``internvl`` (the ``-hf`` checkpoints): ``InternVLForConditionalGeneration`` (InternViT with CLS,
  dropped; pixel shuffle 0.5; Qwen2), the ``GotOcr2ImageProcessorPil`` cutting the image, squashed,
  into 1 … ``max_tiles`` tiles by aspect ratio plus a thumbnail, and the ``<img>…</img>`` wrapper. The
  checkpoints: 448 px tiles of 14 px patches, 12 tiles at most; the replica: ``tile_size`` px tiles of
  ``patch_size`` px patches, ``max_tiles`` at most.
* ``gemma3``: ``Gemma3ForConditionalGeneration`` (SigLIP without CLS, average-pooled to
  ``mm_tokens_per_image``; Gemma 3 text with sliding-window and global layers, bidirectional attention
  among an image's tokens in prefill), the ``Gemma3ImageProcessorPil`` (image squashed to one tile;
  pan-and-scan crops when ``pan_and_scan``). The checkpoints: 896 px, 14 px patches (64 × 64) pooled
  4 × 4 to 16 × 16 tokens, crops of at least 256 px; the replica: ``tile_size`` px, ``patch_size`` px
  patches pooled 2 × 2, crops of at least ``tile_size / 2`` px, sliding window ``sliding_window``.

* ``idefics3`` / ``smolvlm``: ``Idefics3ForConditionalGeneration`` / ``SmolVLMForConditionalGeneration``
  (SigLIP-type vision transformer without CLS, pixel shuffle, Llama), their image processors (longest
  edge resized to ``size``, cut into tiles of ``max_image_size`` plus a global image) and processors
  (``<fake_token_around_image>``, ``<row_r_col_c>``, ``<global-img>``). The checkpoints: Idefics3 364 px
  tiles of 14 px patches, scale 2, longest edge 4 × 364; SmolVLM 512 px tiles of 16 px patches, scale 4
  (256M / 500M); the replicas: 64 px tiles of ``patch_size`` px patches, scale 2 (Idefics3) or 4
  (SmolVLM), longest edge 3 tiles.

Replica tiles (:data:`TILE_SIZES`, ``patch_size`` 8): LLaVA-NeXT 32 px (4 × 4 tokens a tile), InternVL
64 px (8 × 8 patches, 4 × 4 tokens after the pixel shuffle), Gemma 3 64 px (8 × 8 patches pooled to
4 × 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from . import toy

FAMILIES = ("llava_next", "llava_onevision", "internvl", "gemma3", "idefics3", "smolvlm")

#: the replicas' tile sides (px) by family: 4 × 4 tokens a tile, or 8 × 8 before LLaVA-NeXT's unpadding
TILE_SIZES = {"llava_next": 32, "llava_onevision": 32, "internvl": 64, "gemma3": 64, "idefics3": 64, "smolvlm": 64}
#: the replicas' pixel-shuffle scales (Idefics3's, and SmolVLM-256M's)
SCALE_FACTORS = {"idefics3": 2, "smolvlm": 4}

#: LLaVA-NeXT's pinpoints in units of its 336 px tile
LLAVA_NEXT_PINPOINTS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))


@dataclass(frozen=True)
class TiledSpec:
    """Sizes of a tiled-family replica: ``tile_size`` px tiles of ``patch_size`` px patches (a tile is
    ``(tile_size / patch_size)²`` encoder patches; 0: the family's own, :data:`TILE_SIZES`), the vision
    tower and the language model."""

    seed: int = 0
    tile_size: int = 0
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vocab_size: int = 512
    max_positions: int = 4096
    max_tiles: int = 6
    pan_and_scan: bool = True
    sliding_window: int = 16

    @classmethod
    def from_dict(cls, d: dict | None) -> TiledSpec:
        return cls(**toy.known_settings(cls, d, "replica model"))

    def to_dict(self) -> dict:
        return asdict(self)


def _llama(spec: TiledSpec, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
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


def _finish(model, tokenizer):
    model = model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def build_llava_next(spec: TiledSpec, extra_text: list[str] | None = None):
    """``(model, processor)`` of a LLaVA-NeXT replica (CLIP with CLS dropped, ``"default"`` strategy)."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = toy.build_tokenizer(extra_text, spec.vocab_size)
    t = spec.tile_size or TILE_SIZES["llava_next"]
    pinpoints = [[h * t, w * t] for h, w in LLAVA_NEXT_PINPOINTS]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": t}, crop_size={"height": t, "width": t}, image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=spec.patch_size,
        vision_feature_select_strategy="default", chat_template=toy.CHAT_TEMPLATE, num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden, intermediate_size=4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads, image_size=t,
        patch_size=spec.patch_size, projection_dim=spec.vision_hidden,
    )
    config = LlavaNextConfig(
        vision_config=vision, text_config=_llama(spec, tokenizer), image_grid_pinpoints=pinpoints,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", image_seq_length=(t // spec.patch_size) ** 2,
    )
    torch.manual_seed(spec.seed)
    return _finish(LlavaNextForConditionalGeneration(config), tokenizer), processor


def build_tokenizer(specials: list[str], named: dict[str, str], eos: str, pad: str, bos: str | None = None,
                    extra_text: list[str] | None = None, vocab_size: int = 512):
    """Byte-level BPE trained on the task corpus (deterministic) with the family's special tokens
    ``specials``; ``named`` gives the tokenizer attributes the family's processor reads (e.g.
    ``{"start_image_token": "<img>"}``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = toy.BASE_CORPUS + ["user assistant system"] + sorted(set(extra_text or []))
    tok.train_from_iterator(corpus * 8, trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos,
                                   extra_special_tokens=named, model_max_length=32768)


def _qwen2(spec: TiledSpec, tokenizer):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=4 * spec.text_hidden,
        num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads, max_position_embeddings=spec.max_positions,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )


def build_llava_onevision(spec: TiledSpec, extra_text: list[str] | None = None):
    """``(model, processor)`` of a LLaVA-OneVision replica (``anyres_max_9``, pinpoints up to 6 × 6 tiles)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from ..engine.processors import image_only_processor

    tokenizer = build_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        {"image_token": "<image>", "video_token": "<video>"},
        eos="<|im_end|>", pad="<|endoftext|>", extra_text=extra_text, vocab_size=spec.vocab_size)
    t, p = spec.tile_size or TILE_SIZES["llava_onevision"], spec.patch_size
    pinpoints = [[h * t, w * t] for h in range(1, 7) for w in range(1, 7)]
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": t, "width": t}, image_grid_pinpoints=pinpoints,
                                                      image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = image_only_processor(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=(t // p) ** 2,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=INTERNVL_CHAT_TEMPLATE.replace("<IMG_CONTEXT>", "<image>"))
    vision = SiglipVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=4 * spec.vision_hidden,
                                num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                                image_size=t, patch_size=p, vision_use_head=False)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=_qwen2(spec, tokenizer),
                                  image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                                  video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
                                  image_grid_pinpoints=pinpoints, vision_aspect_ratio="anyres_max_9",
                                  vision_feature_select_strategy="full", vision_feature_layer=-1,
                                  tie_word_embeddings=False)
    torch.manual_seed(spec.seed)
    return _finish(LlavaOnevisionForConditionalGeneration(config), tokenizer), processor


# InternVL's conversation format (Qwen2's), the image as the context token the processor expands
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_internvl(spec: TiledSpec, extra_text: list[str] | None = None):
    """``(model, processor)`` of an InternVL (``-hf`` layout) replica."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, InternVLVisionConfig
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from ..engine.processors import image_only_processor

    tokenizer = build_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
         "video_token": "<video>"},
        eos="<|im_end|>", pad="<|endoftext|>", extra_text=extra_text, vocab_size=spec.vocab_size)
    t, p = spec.tile_size or TILE_SIZES["internvl"], spec.patch_size
    per_tile = (t // p // 2) ** 2
    image_processor = GotOcr2ImageProcessorPil(size={"height": t, "width": t}, crop_to_patches=True, min_patches=1,
                                               max_patches=spec.max_tiles, image_mean=[0.485, 0.456, 0.406],
                                               image_std=[0.229, 0.224, 0.225])
    processor = image_only_processor(InternVLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                        image_seq_length=per_tile,
                                                        chat_template=INTERNVL_CHAT_TEMPLATE)
    vision = InternVLVisionConfig(hidden_size=spec.vision_hidden, num_hidden_layers=spec.vision_layers,
                                  num_attention_heads=spec.vision_heads, intermediate_size=4 * spec.vision_hidden,
                                  image_size=[t, t], patch_size=[p, p], use_mean_pooling=True)
    config = InternVLConfig(vision_config=vision, text_config=_qwen2(spec, tokenizer),
                            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=per_tile,
                            downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy="default",
                            tie_word_embeddings=False)
    torch.manual_seed(spec.seed)
    return _finish(InternVLForConditionalGeneration(config), tokenizer), processor


# Gemma 3's conversation format (system turns folded into the user turn are not needed here)
# (the tokenizer prepends <bos>)
GEMMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma3(spec: TiledSpec, extra_text: list[str] | None = None):
    """``(model, processor)`` of a Gemma 3 replica (one sliding-window and one global layer per pair)."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = build_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
         "<image_soft_token>"],
        {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        eos="<end_of_turn>", pad="<pad>", bos="<bos>", extra_text=extra_text, vocab_size=spec.vocab_size)
    t, p = spec.tile_size or TILE_SIZES["gemma3"], spec.patch_size
    per_side = t // p // 2
    image_processor = Gemma3ImageProcessorPil(
        size={"height": t, "width": t}, do_pan_and_scan=spec.pan_and_scan, pan_and_scan_min_crop_size=t // 2,
        pan_and_scan_max_num_crops=4, pan_and_scan_min_ratio_to_activate=1.2, image_mean=[0.5] * 3,
        image_std=[0.5] * 3)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=per_side**2,
                                chat_template=GEMMA3_CHAT_TEMPLATE)
    head_dim = spec.text_hidden // spec.text_heads
    layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(spec.text_layers)]
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=4 * spec.text_hidden,
        num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads, head_dim=head_dim, query_pre_attn_scalar=head_dim,
        max_position_embeddings=spec.max_positions, sliding_window=spec.sliding_window, layer_types=layer_types,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False)
    vision = SiglipVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=4 * spec.vision_hidden,
                                num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                                image_size=t, patch_size=p, vision_use_head=False)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in
           (("boi_token_index", "<start_of_image>"), ("eoi_token_index", "<end_of_image>"),
            ("image_token_index", "<image_soft_token>"))}
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=per_side**2,
                          tie_word_embeddings=False, **ids)
    torch.manual_seed(spec.seed)
    return _finish(Gemma3ForConditionalGeneration(config), tokenizer), processor


# Idefics3's conversation format
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_idefics3(spec: TiledSpec, extra_text: list[str] | None = None, family: str = "idefics3"):
    """``(model, processor)`` of an Idefics3 (or, with ``family="smolvlm"``, SmolVLM) replica."""
    import transformers

    from ..engine.processors import image_only_processor

    prefix = "Idefics3" if family == "idefics3" else "SmolVLM"
    config_cls = getattr(transformers, f"{prefix}Config")
    model_cls = getattr(transformers, f"{prefix}ForConditionalGeneration")
    vision_cls = getattr(transformers, f"{prefix}VisionConfig")
    processor_cls = getattr(transformers, f"{prefix}Processor")
    module = __import__(f"transformers.models.{family}.image_processing_pil_{family}", fromlist=["x"])
    image_processor_cls = getattr(module, f"{prefix}ImageProcessorPil")
    tags = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = build_tokenizer(
        ["<unk>", "<|begin_of_text|>", "<end_of_utterance>", "<pad>", "<fake_token_around_image>", "<image>",
         "<global-img>", "<video>", *tags],
        {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
         "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>",
         "video_token": "<video>"},
        eos="<end_of_utterance>", pad="<pad>", extra_text=extra_text, vocab_size=spec.vocab_size)
    t, p, scale = spec.tile_size or TILE_SIZES[family], spec.patch_size, SCALE_FACTORS[family]
    per_tile = (t // p // scale) ** 2
    image_processor = image_processor_cls(size={"longest_edge": 3 * t}, max_image_size={"longest_edge": t},
                                          do_image_splitting=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if family == "smolvlm":
        processor_cls = image_only_processor(processor_cls)
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=per_tile,
                              chat_template=IDEFICS3_CHAT_TEMPLATE)
    vision = vision_cls(hidden_size=spec.vision_hidden, intermediate_size=4 * spec.vision_hidden,
                        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads, image_size=t,
                        patch_size=p)
    config = config_cls(vision_config=vision, text_config=_llama(spec, tokenizer), scale_factor=scale,
                        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    torch.manual_seed(spec.seed)
    return _finish(model_cls(config), tokenizer), processor


def build_smolvlm(spec: TiledSpec, extra_text: list[str] | None = None):
    """``(model, processor)`` of a SmolVLM replica (:func:`build_idefics3`)."""
    return build_idefics3(spec, extra_text, family="smolvlm")


BUILDERS = {"llava_next": build_llava_next, "llava_onevision": build_llava_onevision, "internvl": build_internvl,
            "gemma3": build_gemma3, "idefics3": build_idefics3, "smolvlm": build_smolvlm}


def build_tiled(family: str, spec: TiledSpec | None = None, extra_text: list[str] | None = None):
    """``(model, processor)`` of the tiled ``family`` at the sizes of ``spec``."""
    if family not in BUILDERS:
        raise ValueError(f"no replica builder for family {family!r} (known: {', '.join(BUILDERS)})")
    return BUILDERS[family](spec or TiledSpec(), extra_text)
