"""Evaluation held to EVAL_CONVENTIONS.md with hand-made cases: VQAv2 normalization and the leave-one-out
average of min(#humans/3, 1), exact match, and CIDEr-D recomputed here from its definition on PTB tokens."""

import math
from collections import Counter

import pytest

from mmrwkv.evaluation.captions import caption_metrics
from mmrwkv.evaluation.ptb import java_available, tokenize_captions
from mmrwkv.evaluation.vqa import exact_match, normalize_answer, score_vqa, vqa_accuracy


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),
        ("The dog.", "dog"),
        ("an apple", "apple"),
        ("A", ""),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("Yes!", "yes"),
        ("yes !", "yes"),
        ("black-and-white", "black and white"),
        ("black - white", "black white"),
        ("10,000", "10000"),
        ("1,2 and a,b", "12 and ab"),
        ("3.5", "3.5"),
        ("mr. smith", "mr smith"),
        ("  red\n", "red"),
        ("red\tand\nblue", "red and blue"),
        ("(left)", "left"),
        ("it's", "it's"),
        ("Frisbee?", "frisbee"),
        ("UP", "up"),
    ],
)
def test_vqa_normalization_hand_cases(raw, normalized):
    assert normalize_answer(raw) == normalized


def _official_average(pred_matches: int, total: int = 10) -> float:
    """Mean over the `total` leave-one-out subsets of min(1, matches among the others / 3)."""
    scores = [min(1.0, (pred_matches - (i < pred_matches)) / 3) for i in range(total)]
    return sum(scores) / total


@pytest.mark.parametrize("matches", range(11))
def test_leave_one_out_average_for_every_match_count(matches):
    answers = ["2"] * matches + [f"other{i}" for i in range(10 - matches)]
    assert vqa_accuracy("two", answers) == pytest.approx(_official_average(matches))


def test_known_leave_one_out_values():
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("yes", ["yes"] + ["no"] * 9) == pytest.approx(0.3)
    assert vqa_accuracy("maybe", ["yes"] * 10) == 0.0


def test_ground_truth_gets_punctuation_only_when_answers_differ_and_is_never_stripped():
    # identical answers stay as they are: "t-shirt" never equals the normalized prediction "t shirt"
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"]) == 1.0
    # GT-Vision-Lab's vqaEval.py strips the prediction only; human answers are compared as stored
    assert vqa_accuracy(" red\n", ["red"] * 4 + ["blue"] * 6) == pytest.approx(1.0)
    assert vqa_accuracy("red", ["red "] * 4 + ["red"] * 2 + ["blue"] * 4) == pytest.approx(0.6)
    # no word step on the ground truth: "two" stays a word while the prediction becomes "2"
    assert vqa_accuracy("two", ["two"] * 5 + ["three"] * 5) == 0.0


def test_exact_match_normalizes_both_sides():
    assert exact_match("The Circle.", "circle") == 1.0
    assert exact_match("two", "2") == 1.0
    assert exact_match("circles", "circle") == 0.0


def test_score_vqa_per_answer_type_means_x100():
    refs = {"1": ["yes"] * 10, "2": ["2"] * 3 + ["3"] * 7, "3": ["red"] * 10}
    result = score_vqa({"1": "Yes", "2": "two", "3": "blue"}, refs, {"1": "yes/no", "2": "number", "3": "other"})
    assert result["accuracy"] == pytest.approx(100 * (1.0 + 0.9 + 0.0) / 3)
    assert result["per_answer_type"] == pytest.approx({"number": 90.0, "other": 0.0, "yes/no": 100.0})


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _cider_d(hyps: dict[str, str], refs: dict[str, list[str]], sigma: float = 6.0) -> tuple[float, dict]:
    """CIDEr-D from its definition (Vedantam et al. + the coco-caption 'D' changes) on tokenized text: tf-idf
    n-gram vectors with df over the reference sets, hypothesis values clipped at the reference's, a Gaussian
    penalty on the length difference (counted in bigrams, as the reference code does), mean over n = 1..4 and
    over references, x10."""
    log_n = math.log(len(refs))
    df = Counter()
    for caps in refs.values():
        df.update({g for cap in caps for n in range(1, 5) for g in _ngrams(cap.split(), n)})

    def vectors(text: str):
        words = text.split()
        vecs = []
        for n in range(1, 5):
            counts = _ngrams(words, n)
            vecs.append({g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in counts.items()})
        return vecs, max(len(words) - 1, 0)

    per = {}
    for key, caps in refs.items():
        hyp_vecs, hyp_len = vectors(hyps[key])
        total = 0.0
        for cap in caps:
            ref_vecs, ref_len = vectors(cap)
            for hv, rv in zip(hyp_vecs, ref_vecs, strict=True):
                dot = sum(min(v, rv.get(g, 0.0)) * rv.get(g, 0.0) for g, v in hv.items())
                norms = math.sqrt(sum(v * v for v in hv.values())) * math.sqrt(sum(v * v for v in rv.values()))
                value = dot / norms if norms else 0.0
                total += value * math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2))
        per[key] = 10.0 * total / 4 / len(caps)
    return sum(per.values()) / len(per), per


REFS = {
    "391895": ["A man with a red helmet on a small moped on a dirt road. ",
               "Man riding a motor bike on a dirt road on the countryside.",
               "A man riding on the back of a motorcycle.\n"],
    "522418": ["A woman wearing a net on her head cutting a cake. ",
               "A woman cutting a large white sheet cake.",
               "A woman marking a cake with the back of a chef's knife. "],
    "184613": ["A child holding a flowered umbrella and petting a yak.",
               "A young man holding an umbrella next to a herd of cattle.",
               "a young boy barefoot holding an umbrella touching the horn of a cow"],
}
HYPS = {"391895": "a man riding a motorcycle on a dirt road", "522418": "a woman cutting a cake with a knife.",
        "184613": "A boy holding an umbrella next to a cow."}


@pytest.mark.parametrize("backend", ["python", "java"])
def test_cider_d_equals_its_definition_on_ptb_tokens(backend):
    if backend == "java" and not java_available():
        pytest.skip("no Java: the PTB jar cannot run")
    tokens, _ = tokenize_captions({**{f"r{k}": v for k, v in REFS.items()},
                                   **{f"h{k}": [v] for k, v in HYPS.items()}}, backend)
    refs = {k: tokens[f"r{k}"] for k in REFS}
    hyps = {k: tokens[f"h{k}"][0] for k in HYPS}
    assert hyps["522418"] == "a woman cutting a cake with a knife" and "chef 's knife" in refs["522418"][2]
    expected, per = _cider_d(hyps, refs)
    result = caption_metrics(HYPS, REFS, metrics=("cider",), tokenizer=backend)
    assert result["metrics"]["CIDEr-D"] == pytest.approx(100 * expected, rel=1e-9)
    assert result["per_sample"]["391895"]["CIDEr-D"] == pytest.approx(100 * per["391895"], rel=1e-9)
    assert result["tokenizer"].startswith(backend) and result["scale"] == "x100"
    assert 0 < expected < 10


def test_cider_d_clips_repeated_words_and_penalizes_length():
    refs = {"a": ["a dog runs on grass"] * 2, "b": ["a cat sleeps on a bed"] * 2}
    fair, _ = _cider_d({"a": "a dog runs on grass", "b": "a cat sleeps"}, refs)
    repeated, _ = _cider_d({"a": "dog dog dog dog dog", "b": "a cat sleeps"}, refs)
    assert repeated < fair
    ours = caption_metrics({"a": "dog dog dog dog dog", "b": "a cat sleeps"}, refs, metrics=("cider",),
                           tokenizer="python")
    assert ours["metrics"]["CIDEr-D"] == pytest.approx(100 * repeated, rel=1e-9)
