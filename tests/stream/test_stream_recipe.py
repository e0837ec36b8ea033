"""The stream recipe runs as shipped on tiny generated streams (2 steps), and its samples are the session's layout."""

import json
from pathlib import Path

import pytest

from mmrwkv.cli import main
from mmrwkv.config import load_config
from mmrwkv.data.streams import load_streams, place_events, stream_questions
from mmrwkv.evaluation.stream_eval import evaluate_stream
from mmrwkv.inference.generate import SamplingConfig
from mmrwkv.inference.stream import StreamSession
from mmrwkv.multimodal import MultimodalRWKV
from mmrwkv.training.train_and_evaluate import run_recipe

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
        "stages.media.train.max_steps=2",
        "stages.media.train.batch_size=4",
        "stages.all.train.max_steps=2",
        "train.batch_size=4",
        "train.checkpoint_every=0",
        f"train.output_dir={tmp_path / 'run'}",
        "eval.max_samples=2",
        "eval.report.thumbnails=false",
    ]
    cfg = load_config(ROOT / "recipes" / "stream_qa.yaml", overrides)
    report = run_recipe(cfg, progress=False)
    final = tmp_path / "run" / "all" / "final"
    assert (tmp_path / "run" / "media" / "final" / "model.safetensors").is_file()
    assert (final / "model.safetensors").is_file()
    assert report.metrics["num_samples"] == 2 and "exact_match" in report.metrics["metrics"]

    # the live session, fed window by window, answers as the pipeline's evaluation predicted from whole prompts
    model = MultimodalRWKV.load(final).eval()
    folder = tmp_path / "data" / "test"
    items = json.loads((folder / "manifest.json").read_text())["items"]
    session = StreamSession(model, sampling=SamplingConfig(temperature=0.0, max_tokens=8, stop=["\n\n"]))
    live = {r["id"]: r["prediction"] for item in items for r in evaluate_stream(session, folder, item)}
    batch = json.loads((tmp_path / "run" / "all" / "eval-test" / "predictions.json").read_text())
    batch = {r["id"]: r["prediction"] for r in batch} if isinstance(batch, list) else batch
    shared = set(live) & set(batch)
    assert shared and all(live[k].strip() == batch[k].strip() for k in shared), (live, batch)

    code = main(
        [
            "stream-eval",
            "--checkpoint",
            str(final),
            "--lengths",
            "1,2",
            "--windows",
            "4",
            "--streams",
            "2",
            "--data-root",
            str(tmp_path / "heldout"),
            "--out",
            str(tmp_path / "curve"),
        ]
    )
    curve = json.loads((tmp_path / "curve" / "curve.json").read_text())["curve"]
    assert code == 0 and set(curve) == {"1", "2"} and curve["2"]["windows"] == 8
    assert all(0 <= curve[m]["exact_match"] <= 1 and curve[m]["questions"] == 6 for m in curve)
    assert (tmp_path / "curve" / "curve.png").is_file()


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


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="espeak-ng is missing (apt-get install)")
def test_spoken_digits_come_from_espeak_in_several_voices(tmp_path):
    import numpy as np

    from mmrwkv.data.streams import SAMPLE_RATE, VOICES, speech_bank

    bank = speech_bank(tmp_path, ("one", "seven"))
    assert sorted(bank) == ["one", "seven"] and all(len(v) == len(VOICES) for v in bank.values())
    for clips in bank.values():
        assert all(0.1 * SAMPLE_RATE < len(c) <= 2 * SAMPLE_RATE and np.abs(c).max() > 0.01 for c in clips)
        # the voices and speeds differ: no two renderings of a digit have the same length and samples
        assert len({(len(c), float(c.sum())) for c in clips}) == len(VOICES)
