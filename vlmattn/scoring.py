"""Benchmark scoring rules: a generated answer against an item's reference answers, as each
benchmark's official evaluation code scores it.

=========  ==========================================================================================
rule       per-item score (float in [0, 1]) and its source
=========  ==========================================================================================
exact      normalised first word equals the first reference's (:func:`vlmattn.answers.normalise_answer`,
           the shapes task's rule)
vqav2      VQA accuracy of GT-Vision-Lab/VQA ``vqaEval.py``: the prediction normalised
           (:func:`vqa_normalise`: punctuation, then number words, articles and contractions); the
           references punctuation-normalised only, and only when they are not all equal; score =
           mean over the leave-one-out subsets of min(#matching references / 3, 1)
           (:func:`vqa_accuracy`; ten references in the benchmark, any number here)
textvqa    TextVQA accuracy of the EvalAI answer processor (``m4c_evaluators.TextVQAAccuracyEvaluator``):
           prediction and every reference pass :func:`evalai_normalise`, then the same leave-one-out
           mean (:func:`textvqa_accuracy`)
gqa        exact match of the stripped prediction with the answer (GQA's ``eval.py``: ``predicted ==
           gold``); predictions lower-cased and a trailing period removed first, as LLaVA's
           ``convert_gqa_for_eval.py`` prepares them (:func:`gqa_match`)
pope       the answer read as yes/no by POPE's ``evaluate.py`` (:func:`pope_label`: first sentence, commas
           removed, "no" if the words hold ``No``, ``no`` or ``not``, else "yes"), equal to the reference
mme        the answer read as yes/no/other by MME's ``calculation.py`` (:func:`mme_label`: lower-cased; "yes"
           or "no" whole, else "yes"/"no" found in its first four characters, else "other"), equal to
           the reference
choice     the option letter read from the answer (:func:`choice_letter`, this project's rule, below),
           equal to the reference letter
=========  ==========================================================================================

Set-level figures beside the mean score: :func:`pope_metrics` (accuracy, precision, recall, F1 and
yes-ratio, "yes" the positive class, as POPE reports them) and :func:`mme_scores` (per category:
accuracy over questions, accuracy+ over images whose every question is right, score =
100·(acc + acc+); perception and cognition totals = sums of their categories' scores).

``choice`` is ours (multiple-choice benchmarks each ship their own parser): the letter is, in order,
the whole answer when it is one option letter (parentheses, a period or a colon around it allowed),
else the letter of the first ``(X)``, else of the first "answer is X", else the first standalone
option letter; None when none is found (scored wrong).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .answers import normalise_answer

RULES = ("exact", "vqav2", "textvqa", "gqa", "pope", "mme", "choice")
#: rules whose per-item score is 0 or 1 (the others average fractional scores)
BINARY_RULES = ("exact", "gqa", "pope", "mme", "choice")

# --- the official VQA answer normalisation (vqaEval.py; the EvalAI processor shares its tables) -------

_CONTRACTION_TABLE = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've
couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've
hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's
howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd
itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't|mightnt've mightn't've
mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've|neednt needn't|notve not've
oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|shant shan't
shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't
shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've
somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd
someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's
somethingd something'd|somethingd've something'd've|something'dve something'd've|somethingll something'll
thats that's|thered there'd|thered've there'd've|there'dve there'd've|therere there're|theres there's
theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll|theyre they're|theyve they've
twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've|werent weren't|whatll what'll
whatre what're|whats what's|whatve what've|whens when's|whered where'd|wheres where's|whereve where've
whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's|whove who've|whyll why'll
whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't|wouldnt've wouldn't've
wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've
y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|you'dve you'd've|youll you'll
youre you're|youve you've
"""
#: word → contracted form (the official table, its quirks included: ``somebody'd`` → ``somebodyd``)
CONTRACTIONS = dict(pair.split(" ") for pair in _CONTRACTION_TABLE.strip().replace("\n", "|").split("|"))
#: number words → digits ("none" → "0", as in the official table)
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
#: removed (or replaced by a space) by the punctuation step, in the official order
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# "(?!<=\d)" is a lookahead, not a lookbehind, in the official pattern: a period is removed unless a
# digit follows it; kept as published
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP_VQA = re.compile(r"(\d)(\,)(\d)")
_COMMA_STRIP_EVALAI = re.compile(r"(?<=\d)(\,)+(?=\d)")


def _punctuation(text: str, comma_strip: re.Pattern) -> str:
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or comma_strip.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # the official call passes re.UNICODE (32) as the count: at most 32 periods are removed
    return _PERIOD_STRIP.sub("", out, re.UNICODE)


def _digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_punctuation(text: str) -> str:
    """The official punctuation step (``processPunctuation``): each mark of :data:`PUNCTUATION` is
    deleted when it touches a space or the text holds a digit-comma-digit, else replaced by a space;
    then periods not followed by a digit are deleted."""
    return _punctuation(text, _COMMA_STRIP_VQA)


def vqa_normalise(text: str) -> str:
    """The prediction's normalisation in ``vqaEval.py``: new lines and tabs to spaces, stripped,
    :func:`vqa_punctuation`, then lower-cased words with number words as digits, articles removed
    and contractions restored (``processDigitArticle``), joined by single spaces."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(vqa_punctuation(text))


def evalai_normalise(text: str) -> str:
    """The EvalAI answer processor (TextVQA, VizWiz): lower-cased, commas and question marks deleted,
    ``'s`` split off (`` 's``), white space as in :func:`vqa_normalise`, the punctuation step with
    EvalAI's comma pattern, then number words, articles and contractions."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text, _COMMA_STRIP_EVALAI))


def _leave_one_out(prediction: str, references: Sequence[str]) -> float:
    """mean over i of min(#{j ≠ i : references[j] == prediction} / 3, 1)."""
    n = len(references)
    matches = sum(r == prediction for r in references)
    # leaving out a matching reference leaves matches − 1, a non-matching one matches
    return float(sum(min((matches - (r == prediction)) / 3, 1.0) for r in references) / n)


def _check_references(references, at_least: int = 1) -> list[str]:
    if isinstance(references, str) or len(references) < at_least:
        raise ValueError(f"references must be a list of at least {at_least} answer(s), got {references!r}")
    return [str(r) for r in references]


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQAv2 accuracy of one answer (``vqaEval.py``, module docstring). ``references``: the human
    answers, ten in VQAv2; at least two (with one, leaving it out leaves nothing to match)."""
    refs = _check_references(references, at_least=2)
    refs = [r.replace("\n", " ").replace("\t", " ").strip() for r in refs]
    if len(set(refs)) > 1:
        refs = [vqa_punctuation(r) for r in refs]
    return _leave_one_out(vqa_normalise(prediction), refs)


def textvqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """TextVQA accuracy of one answer: :func:`evalai_normalise` on the prediction and on every reference,
    then the leave-one-out mean of min(#matching / 3, 1); at least two references."""
    refs = [evalai_normalise(r) for r in _check_references(references, at_least=2)]
    return _leave_one_out(evalai_normalise(prediction), refs)


def gqa_match(prediction: str, answer: str) -> bool:
    """GQA's exact match on the prediction as LLaVA's converter writes it (stripped, trailing period
    removed, lower-cased) against the answer."""
    return prediction.strip().rstrip(".").lower() == answer


def pope_label(text: str) -> str:
    """POPE's reading of an answer: its first sentence (text before the first period), commas removed,
    split on spaces; "no" when a word is ``No``, ``no`` or ``not``, else "yes"."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def mme_label(text: str) -> str:
    """MME's reading of an answer: lower-cased; "yes" or "no" when it is that word, else "yes" when its
    first four characters hold "yes", "no" when they hold "no", else "other"."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


_LETTER_ALONE = re.compile(r"^\(?([A-Z])[).:]?$")
_LETTER_PAREN = re.compile(r"\(([A-Z])\)")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-Z])\b", re.IGNORECASE)
_LETTER_WORD = re.compile(r"\b([A-Z])\b")


def choice_letter(text: str, n_options: int) -> str | None:
    """The option letter (``A`` … the ``n_options``-th letter) an answer gives, by the module
    docstring's ``choice`` rule; None when it gives none."""
    if not 1 <= n_options <= 26:
        raise ValueError(f"n_options must lie in 1 … 26, got {n_options}")
    letters = {chr(ord("A") + i) for i in range(n_options)}
    text = text.strip()
    whole = _LETTER_ALONE.match(text)
    if whole and whole[1] in letters:
        return whole[1]
    for pattern in (_LETTER_PAREN, _ANSWER_IS, _LETTER_WORD):
        for m in pattern.finditer(text):
            letter = m[1].upper()
            if letter in letters:
                return letter
    return None


def reading(rule: str, prediction: str, *, n_options: int | None = None) -> str:
    """What ``rule`` reads from ``prediction`` (the ``answer`` of an evaluation row, compared across runs
    for agreement): ``exact`` the normalised first word, ``vqav2`` :func:`vqa_normalise`, ``textvqa``
    :func:`evalai_normalise`, ``gqa`` the stripped lower-cased text without a trailing period, ``pope``
    :func:`pope_label`, ``mme`` :func:`mme_label`, ``choice`` the letter ("" when none)."""
    if rule == "exact":
        return normalise_answer(prediction)
    if rule == "vqav2":
        return vqa_normalise(prediction)
    if rule == "textvqa":
        return evalai_normalise(prediction)
    if rule == "gqa":
        return prediction.strip().rstrip(".").lower()
    if rule == "pope":
        return pope_label(prediction)
    if rule == "mme":
        return mme_label(prediction)
    if rule == "choice":
        if n_options is None:
            raise ValueError("rule 'choice' needs n_options")
        return choice_letter(prediction, n_options) or ""
    raise ValueError(f"unknown scoring rule {rule!r}; one of {RULES}")


def score(rule: str, prediction: str, references: Sequence[str], *, n_options: int | None = None) -> float:
    """The per-item score of ``prediction`` under ``rule`` (:data:`RULES`, module docstring):
    1.0/0.0 for the binary rules, the VQA accuracy for ``vqav2`` and ``textvqa``. ``references``: the
    item's answers (the first is the answer of the binary rules); ``n_options`` for ``choice``.
    Raises ValueError for an unknown rule or empty references."""
    refs = _check_references(references)
    if rule == "vqav2":
        return vqa_accuracy(prediction, refs)
    if rule == "textvqa":
        return textvqa_accuracy(prediction, refs)
    if rule == "exact":
        return float(normalise_answer(prediction) == normalise_answer(refs[0]))
    if rule == "gqa":
        return float(gqa_match(prediction, refs[0]))
    if rule == "pope":
        return float(pope_label(prediction) == refs[0].strip().lower())
    if rule == "mme":
        return float(mme_label(prediction) == refs[0].strip().lower())
    if rule == "choice":
        if n_options is None:
            raise ValueError("rule 'choice' needs n_options")
        return float(choice_letter(prediction, n_options) == refs[0].strip().upper())
    raise ValueError(f"unknown scoring rule {rule!r}; one of {RULES}")


def pope_metrics(predicted: Sequence[str], truth: Sequence[str]) -> dict[str, float]:
    """POPE's figures of yes/no ``predicted`` labels (:func:`pope_label`) against ``truth``, "yes"
    positive: accuracy = (TP + TN) / n, precision = TP / (TP + FP), recall = TP / (TP + FN),
    F1 = 2PR / (P + R), yes_ratio = share of "yes" predictions (NaN where a denominator is 0)."""
    p = np.asarray([x == "yes" for x in predicted])
    t = np.asarray([x == "yes" for x in truth])
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"predicted and truth must be equally long and non-empty, got {p.size} and {t.size}")
    tp, fp = int((p & t).sum()), int((p & ~t).sum())
    tn, fn = int((~p & ~t).sum()), int((~p & t).sum())
    precision = tp / (tp + fp) if tp + fp else np.nan
    recall = tp / (tp + fn) if tp + fn else np.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else np.nan
    return {"accuracy": (tp + tn) / p.size, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": float(p.mean()), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


#: MME's categories (``calculation.py``'s ``eval_type_dict``)
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_scores(items: pd.DataFrame) -> pd.DataFrame:
    """MME's scores of ``items`` (columns ``category``, ``image``, ``correct``; one row per question,
    two per image in the benchmark): per category ``acc`` = mean of ``correct``, ``acc_plus`` = share of
    the category's images with every question right, ``score`` = 100·(acc + acc_plus); then rows
    ``perception`` and ``cognition`` (``score`` = sum over their categories present, acc columns NaN)
    when any of their categories is present. Columns ``category, n_questions, n_images, acc, acc_plus,
    score``."""
    need = {"category", "image", "correct"}
    if need - set(items.columns):
        raise ValueError(f"items lack the columns {sorted(need - set(items.columns))}")
    rows = []
    for cat, g in items.groupby("category", sort=True):
        per_image = g.groupby("image")["correct"].all()
        acc, plus = float(g["correct"].mean()), float(per_image.mean())
        rows.append({"category": cat, "n_questions": len(g), "n_images": len(per_image), "acc": acc,
                     "acc_plus": plus, "score": 100 * (acc + plus)})
    table = pd.DataFrame(rows, columns=["category", "n_questions", "n_images", "acc", "acc_plus", "score"])
    for total, cats in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION)):
        part = table[table["category"].isin(cats)]
        if len(part):
            rows.append({"category": total, "n_questions": int(part["n_questions"].sum()),
                         "n_images": int(part["n_images"].sum()), "acc": np.nan, "acc_plus": np.nan,
                         "score": float(part["score"].sum())})
    return pd.DataFrame(rows, columns=table.columns)
