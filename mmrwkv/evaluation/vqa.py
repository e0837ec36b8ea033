"""VQA scoring: the official VQAv2 answer normalization and 10-answer leave-one-out accuracy, and exact match for
single-answer sets (easy-VQA, GQA). Rules exactly as in EVAL_CONVENTIONS.md."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

NORMALIZATION = "VQAv2 official (punctuation, periods, number words, articles, contractions)"

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# the official regex, typo included: `(?!<=\d)` is a negative lookahead for "<=digit", not a lookbehind
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# the official code passes re.UNICODE (= 32) where `count` goes, so at most 32 periods are removed
_PERIOD_COUNT = int(re.UNICODE)
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}

# The official list restores apostrophes: each entry is the written form; its keys are the form with all
# apostrophes dropped and, for double contractions, the two half-dropped forms.
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't shan't she'd've should've shouldn't shouldn't've somebody'd've "
    "somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll "
    "that's there'd there'd've there're there's they'd they'd've they'll they're they've wasn't we'd've we've "
    "weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's who've "
    "why'll why're why's won't would've wouldn't wouldn't've y'all you'd you'd've you'll you're you've"
).split()
# entries of the official list that do not follow the pattern above, kept as they are written there
_IRREGULAR = {
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "let's": "let's",
    "she's": "she's",
    "somebody'd": "somebodyd",
    "twas": "'twas",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
}


def _contraction_keys(word: str) -> list[str]:
    parts = word.split("'")
    if len(parts) == 3:
        # "couldn't've" is reached from "couldnt've" and "couldn'tve"
        return [parts[0] + parts[1] + "'" + parts[2], parts[0] + "'" + parts[1] + parts[2]]
    return ["".join(parts)]


CONTRACTIONS: dict[str, str] = {key: word for word in _CONTRACTED for key in _contraction_keys(word)}
CONTRACTIONS.update(_IRREGULAR)


def process_punctuation(text: str) -> str:
    """Official punctuation step: drop a mark touching a space (or anywhere when the text has digit,digit),
    otherwise replace it with a space; then remove periods not followed by a digit."""
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCT:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Official word step: lowercase, number words to digits, drop articles, restore contractions."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Normalize a predicted answer as the official VQA evaluation does."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 accuracy of one prediction in [0, 1]: the mean over leave-one-out subsets of the human answers of
    min(1, matches / 3). Human answers get the punctuation step only when they are not all identical."""
    if len(answers) < 2:
        # leave-one-out over a single answer always scores 0: a silent wrong number
        raise ValueError(
            f"vqa_accuracy needs several human answers (VQAv2 has 10), got {list(answers)!r}; "
            "use exact_match for single-answer sets"
        )
    pred = normalize_answer(prediction)
    # as stored: the official code (GT-Vision-Lab vqaEval.py) neither strips nor word-normalizes human answers
    gts = [process_punctuation(a) for a in answers] if len(set(answers)) > 1 else list(answers)
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        scores.append(min(1.0, sum(a == pred for a in others) / 3))
    return sum(scores) / len(scores)


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when prediction and answer are equal after the same normalization, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def score_vqa(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    answer_types: Mapping[str, str | None] | None = None,
    *,
    metric: str = "vqa_accuracy",
) -> dict:
    """Score predictions {id: text} against references {id: answers}: overall and per answer type, x100.

    `metric` is "vqa_accuracy" (10 human answers) or "exact_match" (against the most common answer, i.e. the
    only one of a single-answer set). Every reference id needs a prediction; a missing one is a KeyError.
    """
    if metric not in ("vqa_accuracy", "exact_match"):
        raise ValueError(f"unknown VQA metric {metric!r}; valid: vqa_accuracy, exact_match")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise KeyError(f"no prediction for {len(missing)} question(s), e.g. {missing[:3]}")
    per_question = {}
    by_type: dict[str, list[float]] = defaultdict(list)
    for qid, answers in references.items():
        if metric == "vqa_accuracy":
            score = vqa_accuracy(predictions[qid], answers)
        else:
            score = exact_match(predictions[qid], Counter(answers).most_common(1)[0][0])
        per_question[qid] = score
        by_type[(answer_types or {}).get(qid) or "all"].append(score)
    return {
        "metric": metric,
        "normalization": NORMALIZATION,
        "num_questions": len(per_question),
        "accuracy": _mean_x100(per_question.values()),
        "per_answer_type": {k: _mean_x100(v) for k, v in sorted(by_type.items()) if k != "all" or len(by_type) > 1},
        "per_question": per_question,
    }


def _mean_x100(values: Iterable[float]) -> float:
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else 0.0
