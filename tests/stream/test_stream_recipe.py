"""The stream recipe runs as shipped on tiny generated streams (2 steps), and its samples are the session's layout."""

from pathlib import Path

import pytest

from mmrwkv.config import load_config
from mmrwkv.data.streams import load_streams, place_events, stream_questions
from mmrwkv.training.pipeline import run_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_stream_recipe_trains_and_evaluates_as_shipped_on_tiny_data(tmp_path):
    overrides = [
        f"data.root={tmp_path / 'data'}",
        "data.sizes.train=8",
        "data.sizes.test=2",
        "data.generator.windows=4",
        "data.generator.questions_per_stream=2",
        "data.generator.speech=false",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.checkpoint_every=0",
        f"train.output_dir={tmp_path / 'run'}",
        "eval.max_samples=2",
        "eval.report.thumbnails=false",
    ]
    cfg = load_config(ROOT / "recipes" / "stream_qa.yaml", overrides)
    report = run_recipe(cfg, progress=False)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert report.metrics["num_samples"] == 2 and "exact_match" in report.metrics["metrics"]


def test_events_keep_their_count_and_gaps_at_every_length():
    import random

    rng = random.Random(0)
    for windows in (12, 48, 192):
        for _ in range(50):
            events = place_events(rng, windows, 4)
            assert 1 <= len(events) <= 4
            ends = [s + n for s, n in events]
            assert all(s > e for (s, _), e in zip(events[1:], ends, strict=False))  # a silent window between
            assert ends[-1] <= windows


def test_questions_are_about_the_stream_so_far(tmp_path):
    from mmrwkv.data.streams import Event

    events = [Event("noise", 1, 2), Event("high tone", 5, 1), Event("noise", 8, 2)]
    qa = {q: a for q, a, _ in stream_questions(events, 9, False, __import__("random").Random(0))}
    assert qa["how many sounds so far?"] == "3"
    assert qa["what was the first sound?"] == "noise" and qa["what came before the last sound?"] == "high tone"
    assert qa["how many seconds did the last sound last?"] == "1"  # asked while it still sounds
    ds = load_streams(tmp_path, "test", 6, windows=6, speech=False)
    for sample in ds:
        t = sample.meta["at"]
        assert len(sample.audio or sample.images) == t
        assert sample.turns[0][1].endswith("\n" + sample.question)
