"""`mmrwkv eval --task` / `--suite` with a real tiny checkpoint: RNN-mode generation on every benchmark's files,
reports whose metrics are those of the written predictions, and the suite table."""

import json

from mmrwkv.cli import main
from mmrwkv.evaluation.tasks import get_task

SUITE = [
    "vqav2_val",
    "vqav2_testdev",
    "gqa",
    "textvqa",
    "textvqa_ocr",
    "pope",
    "scienceqa_img",
    "mmbench_dev",
    "mme",
    "nocaps",
    "flickr30k",
]


def test_suite_runs_every_task_and_writes_one_table(bench_root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "suite"
    code = main(
        [
            "eval",
            "--suite",
            ",".join(SUITE),
            "--checkpoint",
            str(tiny_checkpoint),
            "--data-root",
            str(bench_root),
            "--out",
            str(out),
            "--max-samples",
            "2",
            "--caption-tokenizer",
            "python",
        ]
    )
    assert code == 0
    table = (out / "suite.md").read_text()
    assert capsys.readouterr().out.startswith(table)
    rows = [line for line in table.splitlines() if line.startswith("| [")]
    assert [r.split("]")[0][3:] for r in rows] == SUITE
    assert "| task | metric | samples | wall time |" in table
    for name, row in zip(SUITE, rows, strict=True):
        task = get_task(name)
        metrics = json.loads((out / name / "metrics.json").read_text())
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[2] == str(metrics["num_samples"]) and cells[3].endswith(" s")
        if task.primary:
            assert cells[1] == f"{task.primary} {metrics['metrics'][task.primary]:.2f}"
        # the metrics are those of the predictions the model wrote
        predictions = {p["id"]: p["prediction"] for p in json.loads((out / name / "predictions.json").read_text())}
        samples = [s for s in task.read(task.paths(bench_root / name), task.prompt) if s.id in predictions]
        options = {"tokenizer": "python"} if task.captions else {}
        assert task.score(samples, predictions, **options)["metrics"] == metrics["metrics"]
    assert (out / "vqav2_testdev" / "server_results.json").is_file()
    # MMBench subsets whole questions: 2 questions = 4 + 2 circular rounds
    assert json.loads((out / "mmbench_dev" / "metrics.json").read_text())["num_samples"] == 6


def test_single_task_prints_its_report_and_refuses_a_foreign_directory(bench_root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "pope"
    args = [
        "eval",
        "--task",
        "pope",
        "--checkpoint",
        str(tiny_checkpoint),
        "--data-root",
        str(bench_root / "pope"),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "| F1 |" in capsys.readouterr().out
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main([*args[:-1], str(foreign)]) == 2
    assert "not an evaluation report directory" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_task_errors_are_one_line(bench_root, tiny_checkpoint, tmp_path, capsys):
    assert main(["eval", "--task", "nope", "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "unknown evaluation task 'nope'" in capsys.readouterr().err
    assert main(["eval", "--task", "gqa", "--checkpoint", str(tiny_checkpoint), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "testdev_balanced_questions.json not found" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--task", "gqa"]) == 2
    assert "need --checkpoint" in capsys.readouterr().err


def test_recipe_form_still_takes_its_options_before_or_after_the_recipe(monkeypatch, tmp_path):
    from mmrwkv.evaluation import predict

    calls = []

    def fake(cfg, checkpoint, *, out_dir=None, **_):
        calls.append((cfg.eval.max_samples, str(checkpoint), out_dir))
        return predict.EvalReport({}, "report")

    monkeypatch.setattr(predict, "evaluate_recipe", fake)
    recipe = "recipes/easy_vqa.yaml"
    assert main(["eval", recipe, "--checkpoint", "ck", "eval.max_samples=3"]) == 0
    assert main(["eval", "--checkpoint", "ck", "--out", str(tmp_path), recipe, "eval.max_samples=4"]) == 0
    assert calls == [(3, "ck", None), (4, "ck", str(tmp_path))]
