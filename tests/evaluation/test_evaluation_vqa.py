"""VQA accuracy: official normalization on hand-made cases, leave-one-out over 10 answers, per answer type."""

import pytest

from mmrwkv.evaluation.vqa import (
    CONTRACTIONS,
    exact_match,
    normalize_answer,
    process_punctuation,
    score_vqa,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Yes", "yes"),
        ("  yes!\n", "yes"),
        ("Two.", "2"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("The red ball", "red ball"),
        ("an apple a day", "apple day"),
        ("dont know", "don't know"),
        ("isnt", "isn't"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("thats right", "that's right"),
        # keys with a capital I can never match after lowercasing (as in the official code)
        ("Im", "im"),
        ("somebody'd", "somebodyd"),
        ("3.5", "3.5"),
        ("end.", "end"),
        ("mr. smith", "mr smith"),
        ("a/b", "b"),
        ("x/y", "x y"),
        ("black and/or white", "black and or white"),
        ("10 - 2", "10 2"),
        ("red-white", "red white"),
        ("red -white", "red white"),
        ("1,000", "1000"),
        ("3,4 and a,b", "34 and ab"),
        ("yes, sir", "yes sir"),
        ("(left)", "left"),
        ("hot_dog", "hot dog"),
        ("@home", "home"),
        ("ok?", "ok"),
        ("it's", "it's"),
    ],
)
def test_official_normalization_hand_cases(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_punctuation_step_alone_keeps_articles_and_number_words():
    assert process_punctuation("The two dogs!") == "The two dogs "
    assert process_punctuation("two , three") == "two  three"


def test_contraction_map_has_the_official_entries():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["wont"] == "won't" and CONTRACTIONS["yall'd've"] == "y'all'd've"
    assert CONTRACTIONS["twas"] == "'twas" and CONTRACTIONS["'ows'at"] == "'ow's'at"


@pytest.mark.parametrize(("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_accuracy_over_ten_answers(matches, expected):
    answers = ["cat"] * matches + ["dog", "bird", "fish", "cow", "pig", "hen", "ant", "bee", "owl", "elk"][matches:]
    assert vqa_accuracy("Cat.", answers) == pytest.approx(expected)


def test_ground_truth_gets_punctuation_only_when_answers_differ():
    assert vqa_accuracy("yes", ["yes."] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes."] * 9 + ["yes!"]) == 1.0
    # human answers never get the number-word step
    assert vqa_accuracy("two", ["two"] * 9 + ["2"]) == pytest.approx(0.3)


def test_vqa_accuracy_refuses_single_answer_sets():
    with pytest.raises(ValueError, match="use exact_match for single-answer sets"):
        vqa_accuracy("cat", ["cat"])


def test_exact_match_on_ten_answers_uses_the_most_common():
    result = score_vqa({"q": "dog"}, {"q": ["cat", "dog", "dog", "cat", "dog"]}, metric="exact_match")
    assert result["accuracy"] == 100.0


def test_exact_match_normalizes_both_sides():
    assert exact_match("A Circle.", "circle") == 1.0
    assert exact_match("Three", "3") == 1.0
    assert exact_match("square", "circle") == 0.0


def test_score_vqa_overall_and_per_answer_type():
    refs = {"q1": ["yes"] * 10, "q2": ["2"] * 10, "q3": ["red"] * 10, "q4": ["no"] * 10}
    types = {"q1": "yes/no", "q2": "number", "q3": "other", "q4": "yes/no"}
    preds = {"q1": "Yes", "q2": "two", "q3": "blue", "q4": "yes"}
    result = score_vqa(preds, refs, types)
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["per_answer_type"] == {"number": 100.0, "other": 0.0, "yes/no": 50.0}
    assert result["per_question"]["q2"] == 1.0 and result["normalization"].startswith("VQAv2 official")
    single = score_vqa(preds, {k: v[:1] for k, v in refs.items()}, metric="exact_match")
    assert single["accuracy"] == pytest.approx(50.0) and single["per_answer_type"] == {}


def test_score_vqa_names_missing_predictions_and_bad_metric():
    with pytest.raises(KeyError, match="q9"):
        score_vqa({}, {"q9": ["x"]})
    with pytest.raises(ValueError, match="unknown VQA metric 'bleu'"):
        score_vqa({}, {}, metric="bleu")
