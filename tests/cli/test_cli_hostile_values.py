"""Careless values on the command line and in recipes give one error line naming the field or file and exit
status 2, never a traceback."""

import pytest

from mmrwkv.cli import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_an_encoder_argument_of_the_wrong_type(tmp_path, capsys):
    args = ["train", "recipes/easy_vqa.yaml", "encoders.image.width=abc", f"train.output_dir={tmp_path / 'r'}"]
    assert main(args) == 2
    assert "encoders.image: encoder 'tiny_cnn': argument width = 'abc' is not of type int" in _one_line(capsys)


@pytest.mark.parametrize("command", ["train", "run"])
def test_a_bad_encoder_argument_is_refused_before_the_training_stack_loads(command, tmp_path):
    # the answer comes in the time of the imports it needs: neither Lightning nor the output directory is touched
    import subprocess
    import sys

    out = tmp_path / "r"
    code = (
        "import sys; from mmrwkv.cli import main; "
        f"rc = main([{command!r}, 'recipes/easy_vqa.yaml', 'encoders.image.width=abc', 'train.output_dir={out}']); "
        "print(rc, 'lightning' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "argument width = 'abc' is not of type int" in done.stderr and not out.exists()


def test_a_recipe_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  stage: caf\xe9\n".encode("latin-1"))
    assert main(["train", str(path)]) == 2
    assert f"{path}: not UTF-8 text (byte 0xe9" in _one_line(capsys)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_eval_max_samples_below_one(tmp_path, capsys, value):
    args = ["eval", "recipes/easy_vqa.yaml", "--checkpoint", str(tmp_path), f"eval.max_samples={value}"]
    assert main(args) == 2
    assert f"eval.max_samples: must be >= 1 (or null for the whole split), got {value}" in _one_line(capsys)
