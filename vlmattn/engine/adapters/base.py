"""The family adapter contract: how a model family builds its prompt and lays out its vision tokens."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ...layout import VisionLayout


class Adapter:
    """A model family's contract with the engine. Subclasses set ``family`` (the config's ``family``
    value) and ``model_types`` (the checkpoint ``model_type`` values it accepts) and implement
    :meth:`vision_layout`, :meth:`vision_attention_modules` and :meth:`patch_layout`; the prompt
    methods (:meth:`messages`, :meth:`build_inputs`, :meth:`build_batch_inputs`) have defaults for
    chat-template processors with one image per prompt."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    #: False when prompt tokens may attend to later ones in prefill (Gemma 3's images)
    causal_prefill: bool = True
    #: the pixel value of a blank image (the normalisation's mean colour), the attributions' baseline
    blank_pixel_value: float = 0.0

    def messages(self, question: str, answer: str | None = None) -> list[dict]:
        """Chat messages of one image + ``question``, and the assistant's ``answer`` if given."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return messages

    def processor_kwargs(self, processor) -> dict:
        """Keyword arguments of every processor call (none by default; Gemma 3: its pan-and-scan switch)."""
        return {}

    def chat_prompt(self, processor, question: str, answer: str | None = None) -> str:
        """The chat template rendered for :meth:`messages` (with the generation prompt when there is no
        ``answer``)."""
        return processor.apply_chat_template(self.messages(question, answer), add_generation_prompt=answer is None)

    def batch_images(self, images: list[Image.Image]) -> list:
        """``images`` as the processor takes a batch of one-image prompts (a flat list; Gemma 3: one list a
        prompt)."""
        return list(images)

    def build_inputs(self, processor, image: Image.Image, question: str):
        """Chat-template prompt with one image; returns the processor's tensors (batch of 1)."""
        prompt = self.chat_prompt(processor, question)
        return processor(images=image, text=prompt, return_tensors="pt", **self.processor_kwargs(processor))

    def build_batch_inputs(self, processor, images: list[Image.Image], questions: list[str]):
        """The prompts of ``images[b]`` + ``questions[b]`` as one batch, left-padded (padding first, the
        attention mask 0 there), as batched generation expects."""
        prompts = [self.chat_prompt(processor, q) for q in questions]
        tokenizer = processor.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            return processor(images=self.batch_images(images), text=prompts, padding=True, return_tensors="pt",
                             **self.processor_kwargs(processor))
        finally:
            tokenizer.padding_side = side

    def vision_layout(self, model, processor, inputs, image_size: tuple[int, int]) -> VisionLayout:
        """Where the vision tokens of the prompt ``inputs`` (the processor's tensors, batch of 1) sit and
        which pixels of the original image of ``image_size`` (width, height) each one sees: their spans
        in ``inputs["input_ids"]``, the token grid of each image (row-major) and each token's pixel box
        ``(x0, y0, x1, y1)``, plus the box-less image tokens (:class:`VisionLayout`). ``model`` and
        ``processor`` give the family's patch size, merge factor and resizing."""
        raise NotImplementedError

    def vision_attention_modules(self, model) -> list[torch.nn.Module]:
        """The vision tower's attention modules of ``model``, in layer order (the engine numbers them and
        records their attention, :mod:`vlmattn.engine.vision`)."""
        raise NotImplementedError

    def patch_layout(self, model, processor, inputs, image_size):
        """The :class:`vlmattn.engine.vision.PatchLayout` of the vision tower's token sequence for the
        prompt ``inputs`` of an image of ``image_size`` (width, height): which encoder tokens are patches
        (with their pixel boxes and grid) and which are CLS or padding."""
        raise NotImplementedError


def image_sizes(image_size, n: int) -> list[tuple[int, int]]:
    """One ``(width, height)`` per image from a single size (repeated ``n`` times) or a list of sizes."""
    if len(image_size) == 2 and np.isscalar(image_size[0]):
        return [tuple(int(v) for v in image_size)] * n
    return [tuple(int(v) for v in s) for s in image_size]


def language_model(model) -> torch.nn.Module:
    """The decoder stack of a ``…ForConditionalGeneration`` model: ``model.model.language_model``
    (Idefics3 and SmolVLM: ``model.model.text_model``)."""
    inner = model.model
    return inner.text_model if hasattr(inner, "text_model") else inner.language_model


def tower_layers(tower) -> list[torch.nn.Module]:
    """The encoder layers of a CLIP or SigLIP vision tower (``CLIPVisionModel`` wraps its transformer in
    ``vision_model``; the bare transformer has ``encoder`` itself)."""
    encoder = tower.vision_model.encoder if hasattr(tower, "vision_model") else tower.encoder
    return list(encoder.layers)


def token_spans(input_ids: torch.Tensor, token_id: int) -> np.ndarray:
    """Maximal runs of ``token_id`` in a 1-D id sequence as ``[n, 2]`` (start, end exclusive)."""
    is_tok = np.concatenate([[0], (input_ids.cpu().numpy() == token_id).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(is_tok))
    return edges.reshape(-1, 2).astype(np.int64)
