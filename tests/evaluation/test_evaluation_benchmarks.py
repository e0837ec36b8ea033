"""Every benchmark task end to end on tiny files in its official layout: reader -> prompt -> (scripted) replies
-> metric -> report, with the metric values computed by hand in the comments."""

import json

import pytest

from mmrwkv.evaluation import run_task
from mmrwkv.evaluation.tasks import TASKS, get_task
from mmrwkv.evaluation.tasks.base import OPTION_LETTER, SHORT_ANSWER

F1_2_3 = 100 * 2 / 3
EXPECTED = {
    # "No." and "Yes" match after strip/rstrip('.')/lower; "the left" != "left" (the VQA normalization drops "the")
    "gqa": {"accuracy": 100 * 2 / 3, "accuracy/verify": 100.0, "accuracy/query": 0.0, "exact_match": 100.0},
    # "coca cola" matches the 3 processed "Coca-Cola": (3 * 2/3 + 7 * 1) / 10 = 0.9; "STOP" matches 2 "Stop":
    # (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    "textvqa": {"accuracy": 75.0},
    "textvqa_ocr": {"accuracy": 75.0},
    # random: replies yes/no/no/no for labels yes/yes/no/no: TP 1, FN 1, TN 2; popular: yes/yes for yes/no
    "pope": {
        "random/accuracy": 75.0,
        "random/precision": 100.0,
        "random/recall": 50.0,
        "random/F1": F1_2_3,
        "random/yes_ratio": 25.0,
        "popular/accuracy": 50.0,
        "popular/precision": 50.0,
        "popular/recall": 100.0,
        "popular/F1": F1_2_3,
        "popular/yes_ratio": 100.0,
        "accuracy": 62.5,
        "precision": 75.0,
        "recall": 75.0,
        "F1": F1_2_3,
        "yes_ratio": 62.5,
    },
    # "B. bird" reads as B (right); "A map" is neither a letter nor "X. ..." (wrong); problem 2 has no image
    "scienceqa_img": {"accuracy": 50.0, "accuracy/natural science": 100.0, "accuracy/social science": 0.0},
    # question 0 right in all 4 rounds, question 1 wrong in round 2 of 2
    "mmbench_dev": {
        "accuracy": 50.0,
        "accuracy/attribute_recognition": 100.0,
        "accuracy/logical_reasoning": 0.0,
        "single_round_accuracy": 100.0,
    },
    # existence 100 + 100; artwork 50 + 0; code_reasoning: "n" -> no (wrong), "Not sure" -> no (right): 50 + 0
    "mme": {
        "existence/acc": 100.0,
        "existence/acc+": 100.0,
        "existence/score": 200.0,
        "artwork/acc": 50.0,
        "artwork/acc+": 0.0,
        "artwork/score": 50.0,
        "code_reasoning/acc": 50.0,
        "code_reasoning/acc+": 0.0,
        "perception": 250.0,
        "cognition": 50.0,
    },
    # an exact caption with words unique to its image scores 10 * (1 + 1) / 4 = 5 (x100 = 500), a disjoint one 0
    "nocaps": {"CIDEr-D": 250.0, "CIDEr-D/in-domain": 500.0, "CIDEr-D/near-domain": 0.0, "CIDEr-D/out-domain": 250.0},
    "flickr30k": {"CIDEr-D": 250.0},
    # "Yes" vs 10 x yes: 1; "two" -> "2" vs 3 x "2": 0.9
    "vqav2_val": {"accuracy": 95.0, "accuracy/yes/no": 100.0, "accuracy/number": 90.0},
    "vqav2_testdev": {},
}


def _scripted(replies, seen):
    def generate(model, samples, *, max_tokens, batch_size=8, progress=False):
        seen.extend(samples)
        assert {s.id for s in samples} == set(replies), "the reader yields exactly the fixture's questions"
        return {s.id: replies[s.id] for s in samples}

    return generate


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_end_to_end_scores_hand_computed_values(name, bench_root, replies, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(run_task, "generate", _scripted(replies[name], seen))
    # the Python PTB path keeps the caption tasks fast (the Java path is held to it in tests/formats)
    run = run_task.evaluate_task(name, None, bench_root / name, out_dir=tmp_path / "report", caption_tokenizer="python")
    for key, value in EXPECTED[name].items():
        assert run.metrics[key] == pytest.approx(value, abs=1e-6), key
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written["metrics"] == pytest.approx(run.metrics) and written["num_samples"] == len(seen)
    assert written["prompt"] == TASKS[name].prompt
    # the report states the task, the prompt and the split beside every number
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| task | {name} |" in report and f"| prompt | {TASKS[name].prompt} |" in report
    predictions = json.loads((tmp_path / "report" / "predictions.json").read_text())
    assert {p["id"]: p["prediction"] for p in predictions} == replies[name]


def test_mmbench_rounds_rotate_options_and_answer(bench_root):
    task = get_task("mmbench_dev")
    samples = task.read(task.paths(bench_root / "mmbench_dev"), task.prompt)
    first = [s for s in samples if s.meta["index"] == 0]
    assert [s.id for s in first] == ["0", "1000000", "2000000", "3000000"]
    assert [s.meta["options"][0] for s in first] == ["blue", "green", "red", "white"]
    assert [s.answers[0] for s in first] == ["C", "B", "A", "D"]
    second = [s for s in samples if s.meta["index"] == 1]
    # the row whose image is "0" shares row 0's image; the hint leads the question; "nan" options are absent
    assert second[0].images == first[0].images and second[0].images[0].is_file()
    assert second[1].turns[0][1] == (
        f"<image>\nThe picture shows one shape.\nIs the square red?\nA. no\nB. yes\n{OPTION_LETTER}"
    )


def test_prompts_come_from_the_task_definition(bench_root):
    def first_text(name, prompt=None):
        task = get_task(name)
        samples = task.read(task.paths(bench_root / name), task.prompt if prompt is None else prompt)
        return samples[0].turns[0][1]

    assert first_text("gqa") == f"<image>\nIs there a dog?\n{SHORT_ANSWER}"
    assert first_text("vqav2_val") == f"<image>\nIs it red?\n{SHORT_ANSWER}"
    assert first_text("textvqa") == f"<image>\nwhat brand is the drink?\n{SHORT_ANSWER}"
    # LLaVA's OCR prompts keep their OCR line; their own prompt line gives way to the task's
    assert (
        first_text("textvqa_ocr")
        == f"<image>\nwhat brand is the drink?\nReference OCR token: Coca, Cola\n{SHORT_ANSWER}"
    )
    assert first_text("textvqa_ocr", "Reply briefly.") == (
        "<image>\nwhat brand is the drink?\nReference OCR token: Coca, Cola\nReply briefly."
    )
    assert first_text("scienceqa_img") == (
        f"<image>\nContext: Look at the picture.\nWhich animal can fly?\nA. dog\nB. bird\nC. fish\n{OPTION_LETTER}"
    )
    # MME's own " Please answer yes or no." gives way to the task prompt, and stays without one
    assert first_text("mme") == f"<image>\nIs there a train in this image?\n{SHORT_ANSWER}"
    assert first_text("mme", "") == "<image>\nIs there a train in this image? Please answer yes or no."
    assert first_text("nocaps") == "<image>\nProvide a one-sentence caption for the provided image."
    assert first_text("flickr30k", "Describe the image.") == "<image>\nDescribe the image."
    assert TASKS["pope"].prompt == SHORT_ANSWER and TASKS["mmbench_dev"].prompt == OPTION_LETTER


def test_vqav2_testdev_writes_the_official_server_file(bench_root, replies, tmp_path, monkeypatch):
    monkeypatch.setattr(run_task, "generate", _scripted(replies["vqav2_testdev"], []))
    run = run_task.evaluate_task("vqav2_testdev", None, bench_root / "vqav2_testdev", out_dir=tmp_path / "r")
    records = json.loads((tmp_path / "r" / "server_results.json").read_text())
    # EvalAI processing of the replies; test2015 questions without a prediction get an empty answer
    assert records == [
        {"question_id": 10, "answer": "square"},
        {"question_id": 11, "answer": "2"},
        {"question_id": 12, "answer": ""},
    ]
    assert run.files == ["server_results.json"] and run.value is None
    # the report directory with its server file is an earlier report: running again replaces it
    run_task.evaluate_task("vqav2_testdev", None, bench_root / "vqav2_testdev", out_dir=tmp_path / "r")


def test_max_samples_keeps_mmbench_rounds_and_mme_pairs_together(bench_root):
    for name, key in (("mmbench_dev", "index"), ("mme", "image_key")):
        task = get_task(name)
        samples = task.read(task.paths(bench_root / name), task.prompt)
        kept = run_task.subset(samples, 1, seed=3)
        groups = {s.meta[key] for s in kept}
        assert len(groups) == 1
        assert kept == [s for s in samples if s.meta[key] in groups]


def test_missing_file_names_role_path_and_source(tmp_path):
    from mmrwkv.errors import DataError

    with pytest.raises(DataError, match=r"questions .*testdev_balanced_questions.json not found.*stanford"):
        get_task("gqa").paths(tmp_path)
    with pytest.raises(DataError, match="unknown file role"):
        get_task("gqa").paths(tmp_path, {"pictures": "x"})


def test_bad_record_names_file_record_and_field(bench_root, tmp_path):
    from mmrwkv.errors import DataError

    bad = tmp_path / "gqa"
    (bad / "images").mkdir(parents=True)
    (bad / "testdev_balanced_questions.json").write_text(json.dumps({"7": {"imageId": "n1", "answer": "no"}}))
    task = get_task("gqa")
    with pytest.raises(DataError, match=r"testdev_balanced_questions.json: record 7: field 'question'"):
        task.read(task.paths(bad), task.prompt)


def test_suite_paths_address_one_task_or_every_task_with_the_role():
    from mmrwkv.errors import ConfigError

    paths = {"images": "/coco/val2014", "gqa.questions": "/g/q.json"}
    assert run_task.suite_paths(paths, get_task("pope")) == {"images": "/coco/val2014"}
    assert run_task.suite_paths(paths, get_task("gqa")) == {"images": "/coco/val2014", "questions": "/g/q.json"}
    assert run_task.suite_paths(paths, get_task("mme")) == {}
    tasks = [get_task("pope"), get_task("gqa")]
    run_task.check_suite_paths(paths, tasks)
    for bad in ({"tsv": "x"}, {"mme.root": "x"}, {"gqa.tsv": "x"}):
        with pytest.raises(ConfigError, match="no task of the suite"):
            run_task.check_suite_paths(bad, tasks)
