"""POPE-style object-probing questions (Li et al., 2023, "Evaluating Object Hallucination in Large
Vision-Language Models") from any object annotations: COCO files or the synthetic scenes.

Input: each image's objects, ``{image: [object, …]}`` in dataset order, an image's objects distinct and
in annotation order (:func:`coco_object_lists`, :func:`scene_object_lists`). With ``per_image`` = n,
the images with at least n objects and at least n of the dataset's objects absent are eligible;
``n_images`` of them are drawn without replacement by ``numpy.random.default_rng(seed)`` (all of them,
in dataset order, when ``n_images`` is None). Per image and for i = 0 … n − 1, as POPE's ``utils.pope``:

* a positive question about the image's i-th object, answer "yes";
* right after it, a negative question about an object absent from the image and not yet asked about
  for this image, answer "no", chosen by ``strategy``:

  ``random``       uniformly among the dataset's objects (rejection sampling from the rng);
  ``popular``      the most frequent object of the dataset (count of images holding it);
  ``adversarial``  the object that co-occurs most often with the i-th positive object;

  ties by first appearance in the dataset; ``popular`` and ``adversarial`` fall back to ``random``
  when their list is exhausted.

So the set is balanced, n "yes" and n "no" per image. Question text: ``TEMPLATE`` with the object's
name, "an" before a vowel. Departure from POPE's code: it forms the vowel template by replacing
every "a" of the template (which also yields "imange"); here only the article changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("random", "popular", "adversarial")
TEMPLATE = "Is there {article} {object} in the image?"


@dataclass(frozen=True)
class PopeQuestion:
    """One question: the ``image`` key, the probed ``object``, the ``question`` text, the ``answer``
    ("yes"/"no") and the negative ``strategy`` of its set."""

    image: str
    object: str
    question: str
    answer: str
    strategy: str


def question_text(obj: str, template: str = TEMPLATE) -> str:
    """``template`` filled with ``obj`` and its article ("an" before a, e, i, o, u; else "a")."""
    return template.format(article="an" if obj[:1].lower() in "aeiou" else "a", object=obj)


def _distinct(objects: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(objects))


def _frequency_order(objects: Mapping[str, Sequence[str]]) -> list[str]:
    """Objects by the number of images holding them, descending; ties by first appearance."""
    counts = Counter(o for objs in objects.values() for o in _distinct(objs))
    first = {o: i for i, o in enumerate(dict.fromkeys(o for objs in objects.values() for o in objs))}
    return sorted(counts, key=lambda o: (-counts[o], first[o]))


def _co_occurrence_order(objects: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Per object, the others by the number of images holding both, descending; ties by first co-appearance."""
    counts: dict[str, Counter] = {}
    for objs in objects.values():
        objs = _distinct(objs)
        for o in objs:
            c = counts.setdefault(o, Counter())
            for other in objs:
                if other != o:
                    c[other] += 1
    # Counter keeps insertion order, so a stable sort by count breaks ties by first co-appearance
    return {o: sorted(c, key=lambda x: -c[x]) for o, c in counts.items()}


def pope_questions(objects: Mapping[str, Sequence[str]], *, strategy: str, per_image: int = 3,
                   n_images: int | None = None, seed: int = 0, template: str = TEMPLATE) -> list[PopeQuestion]:
    """The POPE questions of the module docstring, positives and negatives interleaved per image.

    ``objects``: ``{image: [object names]}``; ``strategy`` in :data:`STRATEGIES`; ``per_image`` ≥ 1.
    Deterministic in the arguments. Raises ValueError for an unknown strategy, ``per_image`` < 1, more
    images asked for than are eligible."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if per_image < 1:
        raise ValueError(f"per_image must be at least 1, got {per_image}")
    lists = {img: _distinct(objs) for img, objs in objects.items()}
    vocabulary = list(dict.fromkeys(o for objs in lists.values() for o in objs))
    eligible = [img for img, objs in lists.items()
                if len(objs) >= per_image and len(vocabulary) - len(objs) >= per_image]
    rng = np.random.default_rng(seed)
    if n_images is not None:
        if not 1 <= n_images <= len(eligible):
            raise ValueError(f"n_images must lie in 1 … {len(eligible)} (images with at least {per_image} "
                             f"objects present and {per_image} absent), got {n_images}")
        eligible = [eligible[i] for i in sorted(rng.choice(len(eligible), n_images, replace=False))]
    popular = _frequency_order(lists)
    co_occur = _co_occurrence_order(lists)
    out = []
    for img in eligible:
        present = set(lists[img])
        asked: set[str] = set()
        for obj in lists[img][:per_image]:
            asked.add(obj)
            out.append(PopeQuestion(img, obj, question_text(obj, template), "yes", strategy))
            ranked = {"random": [], "popular": popular, "adversarial": co_occur.get(obj, [])}[strategy]
            neg = next((o for o in ranked if o not in present and o not in asked), None)
            while neg is None:
                cand = vocabulary[int(rng.integers(len(vocabulary)))]
                neg = cand if cand not in present and cand not in asked else None
            asked.add(neg)
            out.append(PopeQuestion(img, neg, question_text(neg, template), "no", strategy))
    return out


def coco_object_lists(coco: Mapping) -> dict[str, list[str]]:
    """``{file name: [category names]}`` of :func:`vlmattn.datasets.read_coco`'s images (annotation
    order, repeats removed; images named twice left out)."""
    return {name: _distinct(o["label"] for _, o in entry.objects) for name, entry in coco.items()
            if entry is not None}


def scene_object_lists(scenes: Mapping, *, colours: bool = False) -> dict[str, list[str]]:
    """``{scene id: [shape labels]}`` of synthetic scenes (``{id: (Shape, …)}``, e.g.
    :data:`vlmattn.images.synthetic.DEFAULT_SCENES`); with ``colours`` the objects are
    "<colour> <label>" ("red square")."""
    return {sid: _distinct(f"{s.colour} {s.label}" if colours else s.label for s in shapes)
            for sid, shapes in scenes.items()}
