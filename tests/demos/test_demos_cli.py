"""`mmrwkv demo`: flags build the right page; a bad checkpoint is a clear error; the served page works offline."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from mmrwkv.cli import build_parser, main
from mmrwkv.commands.demo import build
from mmrwkv.demos.common import RANDOM_TINY, free_port


def _dropdown_choices(app) -> list[list[str]]:
    config = app.get_config_file()
    return [[c[0] for c in comp["props"]["choices"]] for comp in config["components"] if comp["type"] == "dropdown"]


def test_chat_page_offers_the_given_checkpoint_first_and_the_random_model(tiny_checkpoint, tmp_path):
    args = build_parser().parse_args(
        ["demo", "--checkpoint", tiny_checkpoint, "--random-tiny", "--runs-dir", str(tmp_path)]
    )
    app = build(args)
    assert _dropdown_choices(app) == [[tiny_checkpoint, RANDOM_TINY]]
    assert app.mmrwkv_demo.options.checkpoint == tiny_checkpoint


def test_checkpoints_under_runs_are_found_final_first(tiny_checkpoint, tmp_path):
    for rel in ("easy_vqa/checkpoints/step-00000200/model", "easy_vqa/final"):
        shutil.copytree(tiny_checkpoint, tmp_path / rel)
    app = build(build_parser().parse_args(["demo", "--runs-dir", str(tmp_path)]))
    assert _dropdown_choices(app) == [
        [str(tmp_path / "easy_vqa/final"), str(tmp_path / "easy_vqa/checkpoints/step-00000200/model")]
    ]


def test_caption_page_has_two_checkpoint_pickers(tiny_checkpoint, tmp_path):
    app = build(
        build_parser().parse_args(
            ["demo", "--app", "caption", "--checkpoint", tiny_checkpoint, "--runs-dir", str(tmp_path)]
        )
    )
    assert _dropdown_choices(app) == [[tiny_checkpoint]] * 2


def test_bad_checkpoint_flag_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope: no such checkpoint directory" in err and "make run" in err
    assert main(["demo", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "not a multimodal mmrwkv checkpoint" in err


@pytest.mark.slow
def test_demo_command_serves_on_localhost_and_explains_the_missing_checkpoint(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "mmrwkv.cli", "demo", "--runs-dir", str(tmp_path / "runs"), "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "True"}  # the command must turn analytics off itself
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        page = _wait_for(f"http://127.0.0.1:{port}/config", proc)
        assert "make run" in page and "--random-tiny" in page
        assert '"analytics_enabled":false' in page.replace(" ", "")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "make run" in err


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited: {proc.communicate()[1][-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")
