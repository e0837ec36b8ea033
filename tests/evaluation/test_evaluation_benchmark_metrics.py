"""The benchmark metrics on hand-made cases, including the official scripts' quirks."""

import pytest

from mmrwkv.evaluation.tasks.base import index_images
from mmrwkv.evaluation.tasks.gqa import gqa_normalize
from mmrwkv.evaluation.tasks.mmbench import mmbench_letter
from mmrwkv.evaluation.tasks.mme import mme_answer
from mmrwkv.evaluation.tasks.pope import pope_answer, pope_metrics
from mmrwkv.evaluation.tasks.scienceqa import sqa_letter
from mmrwkv.evaluation.tasks.textvqa import evalai_normalize, textvqa_accuracy
from mmrwkv.evaluation.vqa import vqa_accuracy


@pytest.mark.parametrize(
    "reply, answer",
    [
        ("Yes", "yes"),
        ("No.", "no"),
        ("No, there is no dog. Yes.", "no"),
        ("Yes. But no.", "yes"),
        ("There is not", "no"),
        ("yes, not", "no"),
        # the official script's quirks: only the words "No", "no", "not" count ("Not", "Nope", "no." inside a
        # sentence cut at the first period do not)
        ("Not sure", "yes"),
        ("Nope", "yes"),
        ("I don't know", "yes"),
        ("", "yes"),
    ],
)
def test_pope_reads_replies_as_the_official_script(reply, answer):
    assert pope_answer(reply) == answer


def test_pope_metrics_and_yes_ratio_by_hand():
    # replies yes, yes, no, yes for labels yes, no, no, no: TP 1, FP 2, TN 1, FN 0
    values = pope_metrics(["yes", "Yes.", "no", "yes"], ["yes", "no", "no", "no"])
    assert values == pytest.approx(
        {"accuracy": 50.0, "precision": 100 / 3, "recall": 100.0, "F1": 100 * 2 * (1 / 3) / (4 / 3), "yes_ratio": 75.0}
    )
    # never "yes": precision and F1 have a zero denominator and are 0, the yes-ratio is 0
    none = pope_metrics(["no", "no"], ["yes", "no"])
    assert none == {"accuracy": 50.0, "precision": 0.0, "recall": 0.0, "F1": 0.0, "yes_ratio": 0.0}


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("B", "B"),
        ("B. bird", "B"),
        ("The answer is C.", "C"),
        ("  A  ", "A"),
        ("B.bird", None),
        ("b", None),
        ("The answer is B. The answer is C.", None),
        ("E", None),
        ("bird", None),
    ],
)
def test_scienceqa_letter_reading_is_llavas(reply, letter):
    assert sqa_letter(reply, 3) == letter


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("C", "C"),
        ("C.", "C"),
        ("C) red", "C"),
        ("(B)", "B"),
        ("Answer: B", "B"),
        ("It is a green pear", "B"),
        ("red apple or green pear", None),
        ("Cat", None),
        ("E", None),
        ("", None),
    ],
)
def test_mmbench_option_reading(reply, letter):
    assert mmbench_letter(reply, ["red apple", "green pear", "plum"]) == letter


@pytest.mark.parametrize(
    "reply, label",
    [
        ("Yes", "yes"),
        ("no.", "no"),
        ("Y", "yes"),
        ("n", "no"),
        ("Yes, it is.", "yes"),
        ("No, it is not", "no"),
        ("Not sure", "no"),
        ("nothing", "no"),
        ("maybe", "other"),
        ("I think yes", "other"),
        ("x", "other"),
    ],
)
def test_mme_reads_yes_no_other_from_the_start(reply, label):
    assert mme_answer(reply) == label


def test_textvqa_processes_human_answers_unlike_vqav2():
    answers = ["Stop"] * 2 + ["stop sign"] * 8
    # 2 matches: (2 * 1/3 + 8 * 2/3) / 10
    assert textvqa_accuracy("STOP", answers) == pytest.approx(0.6)
    # VQAv2's script leaves identical-looking human answers as stored: "Stop" never equals "stop"
    assert vqa_accuracy("STOP", answers) == 0.0
    assert evalai_normalize("Coca-Cola") == "coca cola"
    assert evalai_normalize("The Dog's bowl?") == "dog 's bowl"
    assert evalai_normalize("10,000") == "10000" and evalai_normalize("Two.") == "2"
    for matches in range(11):
        expected = sum(min(1.0, (matches - (i < matches)) / 3) for i in range(10)) / 10
        assert textvqa_accuracy("yes", ["yes"] * matches + ["no"] * (10 - matches)) == pytest.approx(expected)


def test_gqa_normalization_is_llavas_conversion():
    assert gqa_normalize(" Left. ") == "left" and gqa_normalize("Yes..") == "yes"
    assert gqa_normalize("the left") == "the left" and gqa_normalize("Two") == "two"


def test_image_index_keeps_hex_and_prefixed_ids_apart(tmp_path):
    from PIL import Image

    from mmrwkv.data.readers import index_images as trailing_digit_index

    for stem in ("0054c91397f2fe05", "1f00ab2c3d4e5f05", "n161313", "161313"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{stem}.jpg")
    index = index_images(tmp_path)
    assert set(index) == {"0054c91397f2fe05", "1f00ab2c3d4e5f05", "n161313", "161313"}
    assert index["0054c91397f2fe05"].name == "0054c91397f2fe05.jpg"
    # the COCO-style index of mmrwkv.data.readers maps all four to two numbers: why tasks index by stem
    assert len(trailing_digit_index(tmp_path)) == 2
