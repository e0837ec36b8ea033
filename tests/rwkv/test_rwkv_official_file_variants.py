"""Official files as a reviewer brings them: `mmrwkv convert` there and back bit-exact (every key, dtype, value:
RWKV-7 with or without layer-0 v0/v1/v2, an embedding tied to the head), `mmrwkv info` on each generation, and
bad input (text files, converted-by-the-package files, non-float tensors, 1-D LoRA, a pickle with code, our
directory's files passed one by one, a header that does not fit its config) as one error naming file and problem.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from mmrwkv.checkpoint import describe, load_rwkv, read_official, save_rwkv
from mmrwkv.cli import main
from mmrwkv.errors import CheckpointError

from .conftest import make_official


def _small(version: str, dtype=torch.float32, **kw) -> dict[str, torch.Tensor]:
    sd = make_official(version, **{"vocab": 128, "n_embd": 64, "head_size": 32, **kw})
    return {k: v.to(dtype) for k, v in sd.items()}


def _round_trip(src, tmp_path, capsys) -> dict[str, torch.Tensor]:
    assert main(["convert", str(src), str(tmp_path / "ours")]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.pth")]) == 0
    capsys.readouterr()
    return read_official(tmp_path / "back.pth")


@pytest.mark.parametrize("version", ["4", "5.0", "5.1", "5.2", "6", "7"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_convert_there_and_back_is_bit_exact(version, dtype, tmp_path, capsys):
    src = tmp_path / "official.pth"
    torch.save(_small(version, dtype), src)
    before, after = read_official(src), _round_trip(src, tmp_path, capsys)
    assert sorted(after) == sorted(before)
    for key, tensor in before.items():
        assert after[key].dtype == tensor.dtype and after[key].shape == tensor.shape, key
        assert torch.equal(after[key], tensor), key


def test_rwkv7_layer0_value_lora_survives_the_round_trip_and_is_never_used(tmp_path, capsys):
    sd = _small("7", torch.bfloat16)
    assert "blocks.0.att.v0" in sd
    torch.save(sd, tmp_path / "with.pth")
    after = _round_trip(tmp_path / "with.pth", tmp_path, capsys)
    for key in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
        assert torch.equal(after[key], sd[key])
    changed = {**sd, "blocks.0.att.v0": sd["blocks.0.att.v0"] + 5, "blocks.0.att.v2": -sd["blocks.0.att.v2"]}
    torch.save(changed, tmp_path / "changed.pth")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        a = load_rwkv(tmp_path / "with.pth", dtype=torch.float32).eval()(ids)[0]
        b = load_rwkv(tmp_path / "changed.pth", dtype=torch.float32).eval()(ids)[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("version", ["4", "7"])
def test_an_embedding_tied_to_the_head_converts_and_loads_untied(version, tmp_path, capsys):
    sd = _small(version, torch.bfloat16)
    sd["head.weight"] = sd["emb.weight"]  # one storage under two keys
    torch.save(sd, tmp_path / "tied.pth")
    model = load_rwkv(tmp_path / "tied.pth")
    assert model.emb.weight.data_ptr() != model.head.weight.data_ptr()
    with torch.no_grad():
        model.emb.weight.add_(1.0)  # training one must not move the other
    assert torch.equal(model.head.weight, sd["emb.weight"])
    after = _round_trip(tmp_path / "tied.pth", tmp_path, capsys)
    assert torch.equal(after["head.weight"], sd["emb.weight"]) and torch.equal(after["emb.weight"], sd["emb.weight"])


def test_saving_a_model_whose_weights_share_memory_writes_both(tmp_path):
    model = load_rwkv(_save(tmp_path / "m.pth", _small("6")))
    model.head.weight = model.emb.weight  # tied by hand
    save_rwkv(model, tmp_path / "ours")
    again = load_rwkv(tmp_path / "ours")
    assert torch.equal(again.head.weight, again.emb.weight)


@pytest.mark.parametrize(
    "version, lines",
    [
        ("4", ["RWKV-4 (version 4)", "per channel", "vocab_size         50277"]),
        ("5.0", ["RWKV-5 (version 5.0)", "2 x 32"]),
        ("5.1", ["RWKV-5 (version 5.1)"]),
        ("5.2", ["RWKV-5 (version 5.2)", "dim_ffn            224"]),
        ("6", ["RWKV-6 (version 6)", "lora (maa, decay)  32, 64"]),
        ("7", ["RWKV-7 (version 7)", "lora (w, a, v, g)  32, 32, 16, 32"]),
    ],
)
def test_info_on_each_generation_and_on_its_converted_directory(version, lines, tmp_path, capsys):
    extra = {"vocab": 50277, "n_layer": 1} if version == "4" else {}
    extra.update({"lora": {"maa": 32, "decay": 64}} if version == "6" else {})
    path = _save(tmp_path / "m.pth", _small(version, torch.bfloat16, **extra))
    for target in (path, tmp_path / "ours"):
        if target != path:
            assert main(["convert", str(path), str(target)]) == 0
            capsys.readouterr()
        assert main(["info", str(target)]) == 0
        out = capsys.readouterr().out
        for line in lines:
            assert line in out, (line, out)


def _save(path, data):
    torch.save(data, path)
    return path


class _Code:
    def __reduce__(self):
        return (os.system, ("echo ran > /dev/null",))


BAD = {
    "text file": (lambda p: p.write_text("hello, not a checkpoint"), r"cannot read as a PyTorch checkpoint"),
    "package-converted": (
        lambda p: _save(p, {**_small("7"), "_strategy": "cpu fp32", "_version": "0.7"}),
        r"'_strategy' is a str.*\(a file the rwkv package converted",
    ),
    "trainer checkpoint": (lambda p: _save(p, {"state_dict": _small("7"), "epoch": 1}), r"'state_dict' is a dict"),
    "int8 weights": (
        lambda p: _save(p, {**_small("7"), "blocks.1.att.key.weight": torch.zeros(64, 64, dtype=torch.int8)}),
        r"blocks.1.att.key.weight has dtype int8",
    ),
    "1-D LoRA": (lambda p: _save(p, {**_small("7"), "blocks.0.att.w1": torch.zeros(64)}), r"att.w1 has shape \[64\]"),
    "1-D maa LoRA": (
        lambda p: _save(p, {**_small("6"), "blocks.0.att.time_maa_w1": torch.zeros(64)}),
        r"time_maa_w1 has shape \[64\]",
    ),
    "os.system pickle": (lambda p: _save(p, {**_small("4"), "x": _Code()}), r"refused to load: .*'posix.system'"),
    "zip truncated": (
        lambda p: p.write_bytes(_save(p, _small("7")).read_bytes()[:5000]),
        r"truncated or corrupt\?\): a zip archive without its end \(central directory\): cut short at 5,000 bytes$",
    ),
    "v0 in an RWKV-6": (
        lambda p: _save(p, {**_small("6"), "blocks.0.att.v0": torch.zeros(1, 1, 64)}),
        r"unexpected keys for an RWKV-6 model: blocks.0.att.v0",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_give_one_error_naming_file_and_problem_for_load_info_and_convert(case, tmp_path, capsys):
    make, message = BAD[case]
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_rwkv(path)
    assert str(path) in str(err.value) and "weights_only" not in str(err.value)
    with pytest.raises(CheckpointError, match=message):
        describe(path)
    for command in (["info", str(path)], ["convert", str(path), str(tmp_path / "out")]):
        assert main(command) == 2
        assert str(path) in capsys.readouterr().err


def test_info_checks_weights_against_the_config_like_loading(tmp_path, capsys):
    model_dir = tmp_path / "ours"
    assert main(["convert", str(_save(tmp_path / "m.pth", _small("7"))), str(model_dir)]) == 0
    meta = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "n_embd": 128}}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: emb.weight has shape \[128, 64\]"):
        describe(model_dir)
    (model_dir / "config.json").write_text(json.dumps(meta))
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model.safetensors: cannot read safetensors \(truncated"):
        describe(model_dir)
    assert main(["info", str(model_dir)]) == 2
    capsys.readouterr()


def test_our_directorys_files_given_directly_mean_the_directory(tmp_path, capsys):
    model_dir = tmp_path / "ours"
    assert main(["convert", str(_save(tmp_path / "m.pth", _small("5.2"))), str(model_dir)]) == 0
    for name in ("config.json", "model.safetensors"):
        assert load_rwkv(model_dir / name).config.version == "5.2"
        assert main(["info", str(model_dir / name)]) == 0
    capsys.readouterr()
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((model_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"alone.safetensors: a .safetensors file alone has no config"):
        load_rwkv(alone)


def test_a_missing_g1_series_file_names_its_size_for_mmrwkv_init(tmp_path, capsys):
    path = tmp_path / "rwkv7-g1-0.4b-20250324-ctx4096.pth"
    assert main(["info", str(path)]) == 2
    assert f"mmrwkv init v7-0.4b {path}" in capsys.readouterr().err


def test_convert_never_replaces_a_directory_or_file_that_is_not_one_of_our_checkpoints(tmp_path, capsys):
    src = _save(tmp_path / "m.pth", _small("7"))
    user = tmp_path / "notes"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    assert main(["convert", str(src), str(user)]) == 2
    assert "exists and is not an mmrwkv checkpoint directory" in capsys.readouterr().err
    assert (user / "thesis.txt").read_text() == "precious" and sorted(p.name for p in user.iterdir()) == ["thesis.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["convert", str(src), str(afile)]) == 2
    assert afile.read_text() == "x" and "is a file" in capsys.readouterr().err
    (tmp_path / "d.pth").mkdir()
    assert main(["convert", str(src), str(tmp_path / "d.pth")]) == 2
    assert "is a directory; an official checkpoint is one .pth file" in capsys.readouterr().err
    # an empty directory, one of ours (again), and a .pth in a directory still to be made are fine
    (tmp_path / "empty").mkdir()
    for dst in (tmp_path / "empty", tmp_path / "empty", tmp_path / "new" / "sub" / "m.pth"):
        assert main(["convert", str(src), str(dst)]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or old copies left
