"""score_samples labels every number; write_report writes predictions, metrics, Markdown with thumbnails, curves."""

import json

import pytest
from PIL import Image

from mmrwkv.data.sample import Sample
from mmrwkv.errors import DataError
from mmrwkv.evaluation.report import plot_curves, read_metrics_csv, write_report
from mmrwkv.evaluation.score import score_samples


@pytest.fixture
def samples(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (300, 200), (0, 0, 255)).save(image)
    return [
        Sample(id="q1", images=[image], question="what color?", answers=["blue"], answer_type="other"),
        Sample(id="q2", images=[image], question="is it red?", answers=["no"], answer_type="yes/no"),
        Sample(id="c1", images=[image], captions=["a blue rectangle", "a blue image"]),
        Sample(id="c2", images=[image], captions=["a plain blue picture", "blue"]),
    ]


PREDICTIONS = {"q1": "Blue.", "q2": "yes", "c1": "a blue rectangle", "c2": "a red square"}


def test_score_samples_mixes_vqa_and_caption_metrics_with_labels(samples):
    result = score_samples(
        samples, PREDICTIONS, ["exact_match", "bleu", "spice"], split="val", decoding="greedy", tokenizer="python"
    )
    assert result["metrics"]["exact_match"] == pytest.approx(50.0)
    assert result["metrics"]["exact_match/other"] == 100.0 and result["metrics"]["exact_match/yes/no"] == 0.0
    assert 0 < result["metrics"]["BLEU-1"] < 100
    assert result["split"] == "val" and result["decoding"] == "greedy"
    assert result["tokenizer"].startswith("python") and result["normalization"].startswith("VQAv2")
    assert "SPICE" in result["unavailable"] and result["scale"] == "x100"
    assert result["per_sample"]["q1"] == {"exact_match": 1.0} and "BLEU-4" in result["per_sample"]["c1"]


def test_audio_captions_are_scored_raw(tmp_path):
    clips = [Sample(id=str(i), audio=[tmp_path / "x.wav"], captions=["a dog barks", "barking"]) for i in range(2)]
    result = score_samples(
        clips, {"0": "a dog barks", "1": "rain"}, ["bleu"], split="eval", decoding="greedy", tokenizer="python"
    )
    assert result["scale"] == "x1" and result["metrics"]["BLEU-1"] <= 1.0


def test_write_report_files(samples, tmp_path):
    result = score_samples(
        samples, PREDICTIONS, ["exact_match", "bleu"], split="val", decoding="greedy", tokenizer="python"
    )
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,step,train_loss,val_loss,val_exact_match\n0,1,2.5,,\n0,2,2.0,,\n0,2,,2.2,31.0\n1,3,1.5,,\n"
    )
    paths = write_report(tmp_path / "out", samples, PREDICTIONS, result, num_examples=3, metrics_csv=csv_path)
    predictions = json.loads(paths["predictions"].read_text())
    assert [p["id"] for p in predictions] == ["q1", "q2", "c1", "c2"] and predictions[0]["answers"] == ["blue"]
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["metrics"]["exact_match"] == pytest.approx(50.0) and "per_sample" not in metrics
    report = paths["report"].read_text()
    assert "| split | val |" in report and "| decoding | greedy |" in report and "| exact_match | 50.00 |" in report
    assert (
        report.count("**Prediction:**") == 3 and "![q1](thumbs/000.png)" in report and "![curves](curves.png)" in report
    )
    with Image.open(tmp_path / "out" / "thumbs" / "000.png") as thumb:
        assert max(thumb.size) == 128
    with Image.open(paths["curves"]) as curves:
        assert curves.format == "PNG" and curves.size[0] > curves.size[1]


def test_metrics_csv_series_skip_empty_cells(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("step,train_loss,val_bleu\n1,3.0,\n2,2.0,\n2,,10.5\n")
    series = read_metrics_csv(path)
    assert series == {"train_loss": ([1.0, 2.0], [3.0, 2.0]), "val_bleu": ([2.0], [10.5])}
    path.write_text("iteration,loss\n1,2\n")
    with pytest.raises(DataError, match=r"m\.csv: needs a 'step' column"):
        read_metrics_csv(path)
    path.write_text("step,loss\nfirst,2\n")
    with pytest.raises(DataError, match=r"m\.csv: line 2: step 'first'"):
        plot_curves(path, tmp_path / "c.png")


def test_recipe_helpers_use_the_eval_section(samples, tmp_path):
    from mmrwkv.config import config_from_dict
    from mmrwkv.evaluation.score import report_for_recipe, score_for_recipe

    cfg = config_from_dict(
        {
            "name": "toy",
            "train": {"output_dir": str(tmp_path / "run")},
            "eval": {"split": "test", "metrics": ["exact_match"], "report": {"num_examples": 1, "curves": False}},
            "generation": {"top_k": 1},
        }
    )
    result = score_for_recipe(cfg, samples, PREDICTIONS)
    assert result["split"] == "test" and result["decoding"] == "greedy" and set(result["metrics"]) >= {"exact_match"}
    paths = report_for_recipe(cfg, samples, PREDICTIONS, result, metrics_csv=tmp_path / "missing.csv")
    assert paths["report"] == tmp_path / "run" / "eval-test" / "report.md" and "curves" not in paths
    assert (
        paths["report"].read_text().startswith("# toy: test") and paths["report"].read_text().count("Prediction") == 1
    )
