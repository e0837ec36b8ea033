"""Caption metrics: Java PTB path vs the Python path (held close), read-only package folder, unavailable metrics
reported instead of crashing, and known values (CIDEr-D of one image is 0, a perfect caption scores 100)."""

import os
import shutil
import stat

import pytest

from mmrwkv.evaluation import captions, ptb
from mmrwkv.evaluation.captions import caption_metrics
from mmrwkv.evaluation.ptb import tokenize_java, tokenize_python

SENTENCES = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing in the snow, near a tree!",
    "The cat's toy is on the man's black-and-white couch.",
    'People don\'t like the "big" red bus (at night).',
    "A woman is holding a 3.5 inch phone; she can't see it...",
    "A group of kids -- all smiling -- pose for a photo.",
    "It's a U.S. flag on a pole, isn't it?",
    "Someone cannot find the 1,000 keys: they're lost.",
    "kids' toys scattered on the floor",
    "a sign reading 'stop' at the corner",
    "Cars & trucks at 5:30 p.m. on Main St.",
    "Mr. Smith's cat won't eat; they'd've gone.",
    "Look at that!!! Wow?? #tag @name",
    "A taco. The first one, stop. The 3rd Ave. store",
    "A café with naïve décor \u2014 nice \u2013 really",
    "",
]

REFS = {
    "1": ["A man riding a wave on top of a surfboard.", "A surfer rides a big wave.", "a person surfing"],
    "2": ["Two dogs playing in the snow.", "Dogs run through the snow!", "two dogs in a snowy field"],
    "3": ["A plate with pizza, salad and wine glasses.", "Pizza and salad on a table.", "a table with food"],
    "4": ["The cat's toy is on the couch.", "A cat toy lying on a sofa", "a toy on a couch"],
    "5": ["A red bus (double-decker) on the street.", "a big red bus", "A bus that's red, parked."],
}
PREDS = {
    "1": "a man surfing a wave.",
    "2": "two dogs playing in snow",
    "3": "a pizza on a table",
    "4": "",
    "5": "a red bus",
}


def test_python_tokenizer_matches_the_java_ptb_jar():
    assert tokenize_python(SENTENCES) == tokenize_java(SENTENCES)


def test_java_tokenizer_works_when_the_jar_folder_is_read_only(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    jar = folder / "stanford-corenlp-3.4.1.jar"
    shutil.copy(ptb.ptb_jar(), jar)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        monkeypatch.setattr(ptb, "ptb_jar", lambda: jar)
        assert tokenize_java(["Hello, World!"]) == ["hello world"]
        assert os.listdir(folder) == ["stanford-corenlp-3.4.1.jar"]
    finally:
        os.chmod(folder, stat.S_IRWXU)


def test_python_path_is_held_to_the_java_numbers():
    java = caption_metrics(PREDS, REFS, metrics=("bleu", "rouge_l", "cider"), tokenizer="java")
    python = caption_metrics(PREDS, REFS, metrics=("bleu", "rouge_l", "cider"), tokenizer="python")
    assert java["tokenizer"].startswith("java") and python["tokenizer"].startswith("python")
    assert set(java["metrics"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    # tolerance: 0.5 points on the x100 scale (the tokenizers agree token for token on these captions)
    for name, value in java["metrics"].items():
        assert python["metrics"][name] == pytest.approx(value, abs=0.5), name
    assert 0 < java["metrics"]["BLEU-1"] < 100


def test_perfect_captions_score_100_and_one_image_cider_is_zero():
    refs = {"a": ["a red circle on the left"], "b": ["two blue squares"]}
    perfect = caption_metrics(
        {"a": "A red circle on the left.", "b": "two blue squares"},
        refs,
        metrics=("bleu", "rouge_l"),
        tokenizer="python",
    )
    assert perfect["metrics"]["BLEU-1"] == pytest.approx(100.0) and perfect["metrics"]["ROUGE-L"] == pytest.approx(
        100.0
    )
    single = caption_metrics(
        {"a": "a red circle on the left"}, {"a": refs["a"]}, metrics=("cider",), tokenizer="python"
    )
    assert single["metrics"]["CIDEr-D"] == 0.0


def test_spice_and_spider_are_reported_unavailable_not_raised():
    result = caption_metrics(PREDS, REFS, metrics=("bleu", "spice", "spider"), tokenizer="python")
    assert "BLEU-4" in result["metrics"] and "SPICE" not in result["metrics"]
    assert "offline" in result["unavailable"]["SPICE"] and "SPICE" in result["unavailable"]["SPIDEr"]


def test_a_failing_metric_is_reported_and_the_rest_still_computed(monkeypatch):
    def broken(gts, res):
        raise RuntimeError("boom")

    monkeypatch.setattr(captions, "_cider", broken)
    result = caption_metrics(PREDS, REFS, metrics=("bleu", "cider"), tokenizer="python")
    assert "BLEU-1" in result["metrics"] and "CIDEr-D" not in result["metrics"]
    assert "RuntimeError: boom" in result["unavailable"]["CIDEr-D"]


def test_without_java_auto_takes_the_labelled_python_path(monkeypatch):
    monkeypatch.setattr(captions, "java_available", lambda: False)
    monkeypatch.setattr(ptb, "java_available", lambda: False)
    result = caption_metrics(PREDS, REFS, metrics=("bleu", "meteor"), tokenizer="auto")
    assert result["tokenizer"] == ptb.PYTHON_LABEL
    assert "needs Java" in result["unavailable"]["METEOR"] and "METEOR" not in result["metrics"]


def test_audio_scale_and_input_checks():
    raw = caption_metrics(PREDS, REFS, metrics=("bleu",), tokenizer="python", scale=1.0)
    x100 = caption_metrics(PREDS, REFS, metrics=("bleu",), tokenizer="python")
    assert raw["metrics"]["BLEU-1"] * 100 == pytest.approx(x100["metrics"]["BLEU-1"]) and raw["scale"] == "x1"
    with pytest.raises(KeyError, match="no prediction"):
        caption_metrics({}, REFS, tokenizer="python")
    with pytest.raises(ValueError, match="unknown caption metric"):
        caption_metrics(PREDS, REFS, metrics=("bert",))


@pytest.mark.slow
def test_meteor_matches_pycocoevalcap_wrapper():
    from pycocoevalcap.meteor.meteor import Meteor

    tokens, _ = ptb.tokenize_captions({**REFS, **{f"p{k}": [v] for k, v in PREDS.items()}}, "java")
    gts = {k: tokens[k] for k in REFS}
    res = {k: [tokens[f"p{k}"][0] or captions.EMPTY] for k in REFS}
    ours, per = captions._meteor(gts, res)
    theirs, their_per = Meteor().compute_score(gts, res)
    assert ours["METEOR"] == pytest.approx(theirs) and 0 < theirs < 1
    assert [per[k]["METEOR"] for k in REFS] == pytest.approx(their_per)
