"""write_report writes only into an absent or empty directory or an earlier report, and moves whole files into
place: `mmrwkv eval --out DIR` never overwrites a user's files, a failure leaves the earlier report as it was."""

import json

import pytest
from PIL import Image

import mmrwkv.evaluation.report as report_module
from mmrwkv.data.sample import Sample
from mmrwkv.errors import CheckpointError
from mmrwkv.evaluation.report import write_report

RESULT = {"split": "val", "decoding": "greedy", "num_samples": 1, "metrics": {"exact_match": 100.0}}


@pytest.fixture
def samples(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (40, 30), (0, 0, 255)).save(image)
    return [Sample(id="q1", images=[image], question="what color?", answers=["blue"], answer_type="other")]


@pytest.mark.parametrize("existing", [["report.md"], ["notes.txt"], ["report.md", "metrics.json", "thesis.tex"]])
def test_a_directory_that_is_not_a_report_is_refused_and_kept(samples, tmp_path, existing):
    out = tmp_path / "docs"
    out.mkdir()
    for name in existing:
        (out / name).write_text(f"mine: {name}")
    with pytest.raises(CheckpointError, match=rf"{out}: exists and is not an evaluation report directory"):
        write_report(out, samples, {"q1": "blue"}, RESULT)
    assert {p.name: p.read_text() for p in out.iterdir()} == {name: f"mine: {name}" for name in existing}


def test_a_file_is_refused(samples, tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        write_report(tmp_path / "out", samples, {"q1": "blue"}, RESULT)


def test_an_earlier_report_is_replaced(samples, tmp_path):
    out = tmp_path / "eval"
    write_report(out, samples, {"q1": "red"}, RESULT)
    paths = write_report(out, samples, {"q1": "blue"}, RESULT)
    assert json.loads(paths["predictions"].read_text())[0]["prediction"] == "blue"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.json", "report.md", "thumbs"]
    assert (out / "thumbs" / "000.png").is_file()


def test_a_failed_report_leaves_the_earlier_one_whole(samples, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    write_report(out, samples, {"q1": "red"}, RESULT)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "_markdown", broken)
    with pytest.raises(OSError, match="No space"):
        write_report(out, samples, {"q1": "blue"}, RESULT)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.json", "report.md", "thumbs"]
