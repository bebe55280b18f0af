"""RGB conversion of image files, as the models' image processors do it (no torch import).

transformers' image processors convert a PIL image with ``do_convert_rgb`` through
``transformers.image_transforms.convert_to_rgb``: an image with transparency (an alpha band, ``RGBA``
/ ``LA`` / ``PA``, or a ``transparency`` entry: a palette index or a single-colour key of a ``P`` /
``L`` / ``RGB`` PNG) is converted to ``RGBA`` and composited onto opaque white,

    rgb = α · colour + (1 − α) · 255        (PIL ``alpha_composite``, 8-bit),

and any other mode is converted with ``Image.convert("RGB")``. Dropping the alpha band instead would
show the colours stored under transparent pixels (often black), which the model never sees.
"""

from __future__ import annotations

from PIL import Image

WHITE = (255, 255, 255, 255)


def has_transparency(im: Image.Image) -> bool:
    """True when ``im`` has an alpha band or a ``transparency`` entry (transformers' test)."""
    return "A" in im.getbands() or im.info.get("transparency") is not None


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` in RGB, transparent parts composited onto white (what the image processors feed the model)."""
    if has_transparency(im):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    return im.convert("RGB")
