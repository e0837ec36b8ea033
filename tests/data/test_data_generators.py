"""Synthetic shapes and tones datasets: deterministic for a seed, prepared once, answers true to the content."""

import json

import numpy as np
import pytest
import soundfile
from PIL import Image

from mmrwkv.config import DataConfig
from mmrwkv.data import build_dataset
from mmrwkv.data.generated import read_prepared
from mmrwkv.data.shapes import COLORS, load_shapes, prepare_shapes
from mmrwkv.data.tones import SAMPLE_RATE, load_tones, prepare_tones
from mmrwkv.errors import DataError


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_shapes_are_deterministic_for_a_seed(tmp_path):
    a = prepare_shapes(tmp_path / "a", "train", 6, seed=5)
    b = prepare_shapes(tmp_path / "b", "train", 6, seed=5)
    c = prepare_shapes(tmp_path / "c", "train", 6, seed=6)
    assert _files(a) == _files(b)
    assert (
        _files(a)["000000.png"] != _files(c)["000000.png"] or _files(a)["manifest.json"] != _files(c)["manifest.json"]
    )


def test_splits_differ_for_the_same_seed(tmp_path):
    train = prepare_shapes(tmp_path, "train", 4, seed=0)
    val = prepare_shapes(tmp_path, "val", 4, seed=0)
    assert (train / "manifest.json").read_text() != (val / "manifest.json").read_text().replace("val", "train")


def test_prepared_once_and_regenerated_when_parameters_change(tmp_path):
    folder = prepare_shapes(tmp_path, "train", 3, seed=1)
    stamp = (folder / "000000.png").stat().st_mtime_ns
    (folder / "marker").write_text("kept")
    assert prepare_shapes(tmp_path, "train", 3, seed=1) == folder
    assert (folder / "marker").exists() and (folder / "000000.png").stat().st_mtime_ns == stamp
    prepare_shapes(tmp_path, "train", 5, seed=1)
    assert not (folder / "marker").exists() and (folder / "000004.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders must be removed"


def test_shape_answers_match_the_drawn_scene(tmp_path):
    data = load_shapes(tmp_path, "val", 12, seed=3, task="both")
    manifest = json.loads((tmp_path / "val" / "manifest.json").read_text())
    objects = {item["id"]: item["objects"] for item in manifest["items"]}
    checked = 0
    for sample in data:
        if sample.task == "caption":
            assert len(sample.captions) >= 4
            continue
        objs = objects[sample.meta["item"]]
        if sample.question == "how many shapes are there?":
            assert sample.answers == [str(len(objs))]
            checked += 1
        elif sample.question.startswith("what color is the "):
            shape = sample.question.removeprefix("what color is the ").rstrip("?")
            assert sample.answers == [next(o["color"] for o in objs if o["shape"] == shape)]
            checked += 1
    assert checked >= 3


def test_shape_pixels_have_the_named_colours(tmp_path):
    load_shapes(tmp_path, "train", 4, seed=0)
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    for item in manifest["items"]:
        img = np.asarray(Image.open(tmp_path / "train" / item["file"]))
        cell = img.shape[0] // 3
        for obj in item["objects"]:
            centre = img[int((obj["row"] + 0.5) * cell), int((obj["col"] + 0.5) * cell)]
            assert tuple(centre) == COLORS[obj["color"]]


def test_tones_are_deterministic_16k_wav_with_order_answers(tmp_path):
    a = prepare_tones(tmp_path / "a", "train", 5, seed=2)
    assert _files(a) == _files(prepare_tones(tmp_path / "b", "train", 5, seed=2))
    wave, rate = soundfile.read(a / "000000.wav")
    assert rate == SAMPLE_RATE and wave.ndim == 1 and np.abs(wave).max() > 0.1
    items = json.loads((prepare_tones(tmp_path / "c", "train", 30, seed=2) / "manifest.json").read_text())["items"]
    asked = set()
    for item in items:
        for question, answer, _ in item["qa"]:
            asked.add(question[:10])
            if question == "what is the first sound?":
                assert answer == item["events"][0]["kind"]
            if question.startswith("which came first"):
                kinds = [e["kind"] for e in item["events"]]
                assert answer == min(
                    question.removeprefix("which came first, the ")[:-1].split(" or the "), key=kinds.index
                )
    assert {"what is th", "which came"} <= asked


def test_tone_energy_sits_at_the_event_times(tmp_path):
    folder = prepare_tones(tmp_path, "train", 3, seed=4)
    items = json.loads((folder / "manifest.json").read_text())["items"]
    wave, _ = soundfile.read(folder / items[0]["file"])
    for event in items[0]["events"]:
        mid = int((event["start"] + event["duration"] / 2) * SAMPLE_RATE)
        assert np.abs(wave[mid - 200 : mid + 200]).max() > 0.1
    assert np.abs(wave[: int(0.09 * SAMPLE_RATE)]).max() == 0.0


def test_tasks_select_samples_and_bad_task_raises(tmp_path):
    vqa = load_tones(tmp_path, "val", 4, task="vqa")
    caption = load_tones(tmp_path, "val", 4, task="caption")
    assert {s.task for s in vqa} == {"vqa"} and len(caption) == 4
    assert caption[0].conversation()[0] == ("user", "<audio>Describe the sound.")
    with pytest.raises(DataError, match="unknown task 'qa'"):
        read_prepared(tmp_path / "val", name="tones", split="val", modality="audio", task="qa")


def test_missing_generated_file_is_a_bad_record(tmp_path):
    folder = prepare_shapes(tmp_path, "train", 3, seed=0)
    (folder / "000001.png").unlink()
    with pytest.raises(DataError, match=r"manifest\.json: record 1 \(id shapes-train-1\): media file"):
        read_prepared(folder, name="shapes", split="train", modality="image")
    data = read_prepared(folder, name="shapes", split="train", modality="image", task="caption", skip_bad_records=True)
    assert len(data) == 2 and data.skipped == 1


def test_build_dataset_generates_into_root(tmp_path):
    cfg = DataConfig(kind="shapes", root=str(tmp_path), sizes={"train": 3}, task="caption", seed=9)
    data = build_dataset(cfg, "train")
    assert len(data) == 3 and data[0].images[0].parent == tmp_path / "train"


def test_prepare_command_generates_and_prints(tmp_path, capsys):
    from mmrwkv.data.__main__ import main

    assert main(["shapes", "--root", str(tmp_path), "--size", "2", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "shapes/train: 10 samples from 2 items" in out and "Describe the image." in out
    assert (tmp_path / "train" / "000001.png").is_file()


def test_generator_options_reach_the_generator_and_typos_raise(tmp_path):
    from mmrwkv.errors import ConfigError

    cfg = DataConfig(
        kind="shapes", root=str(tmp_path), sizes={"train": 2}, task="caption", generator={"image_size": 48}
    )
    data = build_dataset(cfg, "train")
    assert Image.open(data[0].images[0]).size == (48, 48)
    cfg.generator = {"imagesize": 48}
    with pytest.raises(ConfigError, match=r"data\.generator: unknown option\(s\) \['imagesize'\].*image_size"):
        build_dataset(cfg, "train")
