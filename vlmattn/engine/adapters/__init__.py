"""Family adapters, looked up by the ``family`` name given in config."""

from __future__ import annotations

from ...errors import ModelError
from ...layout import VisionLayout
from .base import Adapter
from .gemma3 import Gemma3Adapter
from .idefics3 import Idefics3Adapter, SmolVLMAdapter
from .internvl import InternVLAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter, LlavaOnevisionAdapter
from .qwen import Qwen2VLAdapter, Qwen3VLAdapter, Qwen25VLAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    a.family: a
    for a in (LlavaAdapter, LlavaNextAdapter, LlavaOnevisionAdapter, InternVLAdapter, Gemma3Adapter, Idefics3Adapter,
              SmolVLMAdapter, Qwen2VLAdapter, Qwen25VLAdapter, Qwen3VLAdapter)
}


def get_adapter(family: str) -> Adapter:
    """The adapter for ``family``; raises :class:`ModelError` naming the known families."""
    try:
        return ADAPTERS[family]()
    except KeyError:
        raise ModelError(f"unknown model family {family!r} (known: {', '.join(sorted(ADAPTERS))})") from None


__all__ = ["ADAPTERS", "Adapter", "VisionLayout", "get_adapter"]
