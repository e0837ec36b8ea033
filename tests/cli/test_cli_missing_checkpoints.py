"""The README's commands on a fresh clone (no runs/, no official weights): each one fails with one line naming
the missing path and saying where such a checkpoint comes from, never a traceback."""

from pathlib import Path

import pytest

from mmrwkv.checkpoint_files import missing_checkpoint
from mmrwkv.cli import main
from mmrwkv.demos.common import ModelRegistry
from mmrwkv.errors import CheckpointError

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "easy_vqa.yaml")
TRAINED = "runs/easy_vqa/all/final"


@pytest.fixture(autouse=True)
def _fresh_clone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_convert_of_an_absent_official_file_says_where_weights_come_from(capsys):
    assert main(["convert", "RWKV-x070-World-0.1B.pth", "ours/"]) == 2
    err = _error(capsys)
    assert "RWKV-x070-World-0.1B.pth: no such checkpoint file" in err
    assert "huggingface.co/BlinkDL" in err and "mmrwkv init v7-0.1b RWKV-x070-World-0.1B.pth" in err
    assert not Path("ours").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--checkpoint", TRAINED, "--image", "img.png", "--prompt", "what color is the shape?"],
        ["generate", "--checkpoint", TRAINED, "--prompt", "hello"],
        ["eval", RECIPE, "--checkpoint", TRAINED, "eval.max_samples=500"],
        ["info", TRAINED],
    ],
    ids=["generate-image", "generate-text", "eval", "info"],
)
def test_commands_on_an_untrained_run_say_how_to_train_it(argv, capsys):
    assert main(argv) == 2
    err = _error(capsys)
    assert f"{TRAINED}: no such checkpoint" in err and "make run" in err and "recipes/easy_vqa.yaml" in err


def test_demo_registry_names_the_missing_directory_and_how_to_train_one(tmp_path):
    with pytest.raises(CheckpointError) as err:
        ModelRegistry().get(str(tmp_path / "absent"))
    assert "absent: no such checkpoint directory" in str(err.value) and "make run" in str(err.value)


@pytest.mark.parametrize(
    ("name", "size"),
    [("checkpoints/RWKV-x070-World-1.5B-v3-20250127-ctx4096.pth", "v7-1.5b"), ("RWKV-x060-World-1B6.pth", "SIZE")],
)
def test_the_init_hint_names_the_size_an_official_file_name_implies(name, size):
    assert f"`mmrwkv init {size} {name}`" in str(missing_checkpoint(name))


def test_info_of_a_small_model_counts_millions(tmp_path, capsys):
    assert main(["init", "v7-tiny", str(tmp_path / "tiny")]) == 0
    assert main(["info", str(tmp_path / "tiny")]) == 0
    assert "parameters         147,008 (0.15 M)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["text", "text.pth"])
def test_generate_with_an_image_on_a_text_only_checkpoint_says_so(name, tmp_path, capsys):
    assert main(["init", "v7-tiny", str(tmp_path / name)]) == 0
    capsys.readouterr()
    argv = ["generate", "--checkpoint", str(tmp_path / name), "--image", "img.png", "--prompt", "what?"]
    assert main(argv) == 2
    err = _error(capsys)
    assert "--image / --audio need a multimodal checkpoint" in err and "text-only" in err


def test_info_describes_a_trained_multimodal_checkpoint(tmp_path, capsys):
    from mmrwkv.multimodal import MultimodalRWKV

    config = {
        "backbone": {"size": "v7-tiny", "n_embd": 32, "vocab_size": 65536},
        "encoders": {"image": {"name": "tiny_cnn", "kwargs": {"image_size": 16, "width": 8, "grid": 2}}},
        "projectors": {"image": {"kind": "linear"}},
        "placement": "first",
    }
    model = MultimodalRWKV.from_config(config)
    model.save(tmp_path / "final")
    assert main(["info", str(tmp_path / "final")]) == 0
    out = capsys.readouterr().out
    backbone = sum(p.numel() for p in model.backbone.parameters())
    everything = sum(p.numel() for p in model.parameters())
    assert "mmrwkv multimodal" in out and "RWKV-7 (version 7)" in out and "image encoder      tiny_cnn" in out
    assert f"parameters         {backbone:,} " in out and f"all parameters     {everything:,} " in out
    assert "tokenizer          world" in out
