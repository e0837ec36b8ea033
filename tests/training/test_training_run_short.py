"""`mmrwkv run` shorter than `train.log_every`: no metrics row was logged, the report comes without curves."""

from mmrwkv.cli import main

RECIPE = "recipes/easy_vqa.yaml"


def test_run_with_fewer_steps_than_log_every_reports_without_curves(tmp_path, tiny):
    out = tmp_path / "run"
    # no validation either: nothing is logged at all
    args = tiny(out, **{"train.max_steps": 2, "train.log_every": 25, "data.val_split": "null"})
    assert main(["run", RECIPE, *args, "--no-progress"]) == 0
    assert not (out / "logs" / "csv" / "metrics.csv").is_file()
    report = (out / "eval-test" / "report.md").read_text()
    assert "exact_match" in report and "Timing:" in report and "curves.png" not in report
