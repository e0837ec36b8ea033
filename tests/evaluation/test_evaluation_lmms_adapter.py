"""`lmms-eval --model mmrwkv` end to end on tasks defined here in lmms-eval's own task format (YAML + utils.py)
over local JSON-lines data: a generate_until VQA task and a multiple-choice (loglikelihood) task. Skipped when
the optional `lmms-eval` extra is not installed (CI installs it into its own environment: .ci/run)."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("lmms_eval", reason="the optional lmms-eval extra is not installed (pip install mmrwkv[lmms])")

UTILS = """
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"
"""

VQA_YAML = """
task: mmrwkv_local_vqa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 6
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: "\\nAnswer the question using a single word or phrase."
"""

CHOICE_YAML = """
task: mmrwkv_local_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: ""
"""


@pytest.fixture
def task_dir(tmp_path):
    from PIL import Image

    folder = tmp_path / "tasks"
    folder.mkdir()
    rows = []
    for i, color in enumerate([(220, 20, 20), (20, 20, 220), (220, 20, 20)]):
        image = tmp_path / f"img{i}.png"
        Image.new("RGB", (16, 16), color).save(image)
        rows.append(
            {
                "image": str(image),
                "question": "What color is the image?",
                "answer": "red" if i != 1 else "blue",
                "choices": ["red", "blue", "green"],
                "label": 0 if i != 1 else 1,
            }
        )
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "utils.py").write_text(UTILS)
    (folder / "mmrwkv_local_vqa.yaml").write_text(VQA_YAML.format(data=data))
    (folder / "mmrwkv_local_choice.yaml").write_text(CHOICE_YAML.format(data=data))
    return folder


def _results(out_dir, done) -> dict:
    files = sorted(out_dir.rglob("*results*.json"))
    assert files, f"no results JSON under {out_dir}: " + done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(files[-1].read_text())["results"]


def _expected(checkpoint, folder) -> tuple[float, float]:
    """(acc, exact match) of the adapter called here in-process on the same documents."""
    import string

    from PIL import Image

    from mmrwkv.evaluation.lmms import MMRWKV

    rows = [json.loads(line) for line in (folder.parent / "data.jsonl").read_text().splitlines()]
    model = MMRWKV(checkpoint=str(checkpoint))
    model.task_dict = {"t": {"test": rows}}
    visual = lambda doc: [Image.open(doc["image"]).convert("RGB")]  # noqa: E731
    right = 0
    for i, row in enumerate(rows):
        requests = [
            _request("loglikelihood", (row["question"], f" {c}", visual, i, "t", "test")) for c in row["choices"]
        ]
        scores = [r.text[0] for r in model.loglikelihood(requests)]
        # lmms-eval picks the smallest value: the adapter returns negative log-likelihoods
        right += scores.index(min(scores)) == row["label"]
    kwargs = {"max_new_tokens": 6, "temperature": 0, "do_sample": False}
    prompt = "\nAnswer the question using a single word or phrase."
    replies = model.generate_until(
        [
            _request("generate_until", (row["question"] + prompt, kwargs, visual, i, "t", "test"))
            for i, row in enumerate(rows)
        ]
    )
    strip = str.maketrans("", "", string.punctuation)
    matches = [r.lower().translate(strip) == row["answer"] for r, row in zip(replies, rows, strict=True)]
    return right / len(rows), sum(matches) / len(rows)


def test_lmms_eval_cli_runs_local_tasks_through_mmrwkv(task_dir, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "mmrwkv",
        "--model_args",
        f"checkpoint={tiny_checkpoint}",
        "--tasks",
        "mmrwkv_local_vqa,mmrwkv_local_choice",
        "--include_path",
        str(task_dir),
        "--batch_size",
        "1",
        "--output_path",
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    # lmms-eval exits 0 even when evaluation fails: the results file is the proof
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = _results(out, done)
    acc, exact = _expected(tiny_checkpoint, task_dir)
    assert results["mmrwkv_local_choice"]["acc,none"] == pytest.approx(acc)
    assert results["mmrwkv_local_vqa"]["exact_match,none"] == pytest.approx(exact)


class _Doc(dict):
    pass


def _request(kind, args):
    from lmms_eval.api.instance import Instance

    return Instance(
        request_type=kind, arguments=args, idx=0, metadata={"task": args[4], "doc_id": args[3], "repeats": 1}
    )


def test_loglikelihood_reuses_the_prompt_state_and_equals_the_full_sequence(tiny_checkpoint, tmp_path):
    from PIL import Image

    from mmrwkv.data.template import Turn
    from mmrwkv.evaluation.lmms import MMRWKV

    model = MMRWKV(checkpoint=str(tiny_checkpoint))
    image = Image.new("RGB", (16, 16), (200, 10, 10))
    model.task_dict = {"t": {"test": [_Doc(image=image)]}}
    visual = lambda doc: [doc["image"]]  # noqa: E731
    requests = [
        _request("loglikelihood", ("What color?", f" {c}", visual, 0, "t", "test")) for c in ("red", "blue", "green")
    ]
    scores = [r.text for r in model.loglikelihood(requests)]
    # one prompt prefill for the document's three choices
    assert model.prompt_prefills == 1 and len(scores) == 3
    # each score is minus the log-probability of the choice's tokens after the whole prompt, run as one sequence
    enc = model.session.template.encode_turns([Turn("user", "What color?", images=[image])])
    tokenizer = model.model.tokenizer
    for (loss, greedy), choice in zip(scores, ("red", "blue", "green"), strict=True):
        cont = tokenizer.encode(f" {choice}")
        with torch.inference_mode():
            logits, _ = model.model(torch.tensor([enc.ids + cont]), enc.media)
        logp = torch.log_softmax(logits[0].float(), -1)
        positions = range(len(enc.ids) - 1, len(enc.ids) + len(cont) - 1)
        expected = sum(float(logp[p, t]) for p, t in zip(positions, cont, strict=True))
        assert loss == pytest.approx(-expected, abs=1e-4)
        assert greedy == all(int(logp[p].argmax()) == t for p, t in zip(positions, cont, strict=True))


def test_generate_until_reuses_the_image_prefill_and_stops_at_until(tiny_checkpoint):
    from PIL import Image

    from mmrwkv.evaluation.lmms import MMRWKV

    model = MMRWKV(checkpoint=str(tiny_checkpoint))
    image = Image.new("RGB", (16, 16), (10, 200, 10))
    model.task_dict = {"t": {"test": [_Doc(image=image)]}}
    visual = lambda doc: [doc["image"]]  # noqa: E731
    kwargs = {"max_new_tokens": 5, "until": ["\n"], "temperature": 0, "do_sample": False}
    first, second = model.generate_until(
        [
            _request("generate_until", ("Is it green?", kwargs, visual, 0, "t", "test")),
            _request("generate_until", ("Is it red?", kwargs, visual, 0, "t", "test")),
        ]
    )
    assert "\n" not in first and "\n" not in second
    # the second question about the same image found the image's prefill in the cache
    assert model.cache.hits >= 1
    assert model.generate_until([_request("generate_until", ("Is it green?", kwargs, visual, 0, "t", "test"))]) == [
        first
    ]


def test_lmms_eval_finds_the_model_by_name():
    from lmms_eval.models import get_model

    from mmrwkv.evaluation.lmms import MMRWKV

    assert get_model("mmrwkv") is MMRWKV
