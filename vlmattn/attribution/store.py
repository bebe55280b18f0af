"""A sample's attribution file, ``{results}/attribution/{model}/{image}__{question}.h5`` (written by
:func:`vlmattn.attribution.jobs.attribute_shard`, read without torch).

File layout (float64 unless noted; attributes on the root: model_id, image_id, question_id, question,
target_id, target_token, log_prob, ig_value, ig_baseline_value, ig_delta, ig_pixels_value,
ig_pixels_baseline_value, ig_pixels_delta, ig_baseline, ig_steps, pixel_steps):

    /maps                 [K, V]      the maps of :mod:`.sample` (:data:`MAP_KINDS`), attribute ``kinds``
                                      (JSON list, row order)
    /layers/attention     [L, V]      head-mean attention of ``q`` per decoder layer
    /layers/relevance     [L, V]      Ā_l[q] per decoder layer
    /alignment/answer     [L + 1, V]  cos with the answer token per hidden state
    /alignment/text       [L + 1, V]  mean cos with the prompt's text tokens
    /modality/vision_sum  [L + 1, D]  Σ of unit-normalised vision hidden states (attribute ``n``)
    /modality/text_sum    [L + 1, D]  the same for the prompt's text tokens (attribute ``n``)
    /image/token_boxes [V, 4], /image/grid [2] (int), /image/size [2] (int), /image/boxes [O, 4],
    /image/labels [O] (str), attribute ``path``
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..store import AttentionSample
from ..tables import atomic_target

#: the maps of :mod:`.sample`, in file order
MAP_KINDS = ("attention", "rollout", "attention_gradient", "attention_gradient_rollout", "integrated_gradients",
             "integrated_gradients_pixels", "saliency", "alignment", "random")
_STR = h5py.string_dtype()


def write(path, sa, cached: AttentionSample, attrs: dict) -> None:
    """Write ``sa`` (a :class:`.sample.SampleAttribution`) in the module docstring's layout, atomically, with
    the cached sample's image arrays and ``attrs`` (ids)."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        _write(tmp, sa, cached, attrs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write(tmp: Path, sa, cached: AttentionSample, attrs: dict) -> None:
    with h5py.File(tmp, "w", track_order=True) as f:
        for k, v in {**attrs, **sa.attrs}.items():
            f.attrs[k] = v
        f.attrs["question"] = cached.attrs.get("question", "")
        d = f.create_dataset("maps", data=np.stack([sa.maps[k] for k in MAP_KINDS]).astype(np.float64))
        d.attrs["kinds"] = json.dumps(list(MAP_KINDS))
        f["layers/attention"] = sa.attention_layers.astype(np.float64)
        f["layers/relevance"] = sa.relevance_layers.astype(np.float64)
        f["alignment/answer"] = sa.alignment_answer
        f["alignment/text"] = sa.alignment_text
        for key, total, n in (("vision_sum", sa.vision_sum, sa.n_vision), ("text_sum", sa.text_sum, sa.n_text)):
            f[f"modality/{key}"] = total
            f[f"modality/{key}"].attrs["n"] = int(n)
        im = f.create_group("image")
        im["token_boxes"] = np.asarray(cached.token_boxes, np.float64)
        im["grid"] = np.asarray(cached.grid, np.int64).reshape(-1, 2)[0]
        im["size"] = np.asarray(cached.image_size, np.int64)
        im["boxes"] = np.asarray(cached.boxes, np.float64).reshape(-1, 4)
        im.create_dataset("labels", data=np.array(cached.labels, dtype=object), dtype=_STR)
        im.attrs["path"] = str(cached.attrs.get("image_path", ""))


@dataclass
class AttributionArrays:
    """The maps (kind → ``[V]``) and per-layer arrays of one sample, as the module docstring lays them out."""

    maps: dict[str, np.ndarray]
    attention_layers: np.ndarray
    relevance_layers: np.ndarray
    alignment_answer: np.ndarray
    alignment_text: np.ndarray
    vision_sum: np.ndarray
    text_sum: np.ndarray
    n_vision: int
    n_text: int


@dataclass
class StoredAttribution(AttributionArrays):
    """A sample's attribution file read back: the arrays, the image's and the root attributes."""

    token_boxes: np.ndarray
    grid: np.ndarray
    image_size: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    image_path: str
    attrs: dict


def read(path) -> StoredAttribution:
    with h5py.File(path, "r") as f:
        kinds = json.loads(f["maps"].attrs["kinds"])
        maps = dict(zip(kinds, f["maps"][()], strict=True))
        return StoredAttribution(
            maps=maps,
            attention_layers=f["layers/attention"][()],
            relevance_layers=f["layers/relevance"][()],
            alignment_answer=f["alignment/answer"][()],
            alignment_text=f["alignment/text"][()],
            vision_sum=f["modality/vision_sum"][()],
            text_sum=f["modality/text_sum"][()],
            n_vision=int(f["modality/vision_sum"].attrs["n"]),
            n_text=int(f["modality/text_sum"].attrs["n"]),
            token_boxes=f["image/token_boxes"][()],
            grid=f["image/grid"][()],
            image_size=f["image/size"][()],
            boxes=f["image/boxes"][()],
            labels=[x.decode() if isinstance(x, bytes) else str(x) for x in f["image/labels"][()]],
            image_path=str(f["image"].attrs["path"]),
            attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
        )
