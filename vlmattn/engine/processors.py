"""Loading a checkpoint's processor, with or without torchvision.

The Qwen processors declare a video processor; transformers builds video processors with torchvision
only, and its PyPI build does not import beside the CPU torch wheel. Without it,
``AutoProcessor.from_pretrained`` fails for these families (``VIDEO_PROCESSOR_MAPPING`` has no
``_extra_content``, or "Can't load video processor"), and so does constructing the processor class
with ``video_processor=None``. :func:`image_only_processor` derives the same processor class without
the video slot: images and text are processed by the family's own code (the PIL image processor),
only videos are unsupported. It keeps the class name, so a processor saved from it is a normal
checkpoint that ``AutoProcessor`` loads where torchvision exists.
"""

from __future__ import annotations

import functools


@functools.cache
def image_only_processor(cls: type) -> type:
    """``cls`` (a ``ProcessorMixin`` with ``image_processor, tokenizer, video_processor``) minus video.

    ``ProcessorMixin`` reads the sub-processor slots from the ``__init__`` signature, so the derived
    class loads and saves only ``image_processor`` and ``tokenizer``.
    """

    import inspect

    # the wrapper takes the class's own settings by name (transformers reads a processor's settings
    # from its __init__'s argument names: e.g. InternVL's image_seq_length), all but video_processor
    params = [v for k, v in inspect.signature(cls.__init__).parameters.items()
              if k not in ("self", "video_processor") and v.kind is v.POSITIONAL_OR_KEYWORD]
    names = [p.name for p in params]
    source = (f"def __init__(self, {', '.join(f'{n}=None' for n in names)}, **kwargs):\n"
              f"    given = {{{', '.join(f'{n!r}: {n}' for n in names)}}}\n"
              "    given = {k: v for k, v in given.items() if v is not None or k in ('image_processor', 'tokenizer')}\n"
              f"    cls.__init__(self, video_processor=None, **given, **kwargs)\n")
    scope = {"cls": cls}
    exec(source, scope)  # noqa: S102 - a signature built from cls's own
    __init__ = scope["__init__"]
    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": __name__, "__doc__": cls.__doc__})


def load_processor(path: str):
    """``AutoProcessor.from_pretrained(path)``; if that fails on a processor with a video slot, the
    image-only variant of its class (see the module docstring). Re-raises the first error otherwise."""
    import inspect

    import transformers
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except Exception as first:  # noqa: BLE001 - decided below
        try:
            from transformers.processing_utils import ProcessorMixin

            name = ProcessorMixin.get_processor_dict(path)[0].get("processor_class")
            cls = getattr(transformers, name, None) if name else None
        except Exception:  # noqa: BLE001
            cls = None
        if cls is None or "video_processor" not in inspect.signature(cls.__init__).parameters:
            raise first
        return image_only_processor(cls).from_pretrained(path)
