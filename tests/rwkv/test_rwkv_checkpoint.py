"""Checkpoints: official .pth detection and errors, our directory format, conversion both ways."""

from __future__ import annotations

import json

import pytest
import torch

from mmrwkv.checkpoint import convert, describe, detect_config, load_rwkv, save_official, save_rwkv
from mmrwkv.errors import CheckpointError


def _same_logits(a, b):
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        torch.testing.assert_close(a(ids)[0], b(ids)[0], rtol=0, atol=0)


@pytest.mark.parametrize(
    "version, fields",
    [("4", {}), ("5.0", {"head_size": 32}), ("5.1", {"head_size": 32}), ("5.2", {"head_size": 32}),
     ("6", {"head_size": 32, "dim_maa": 16, "dim_decay": 32}),
     ("7", {"head_size": 32, "dim_w": 32, "dim_a": 32, "dim_v": 16, "dim_g": 32})],
)
def test_generation_and_every_size_are_read_from_tensor_shapes(version, fields, official_sd):
    sd = official_sd(version, n_layer=3, n_embd=64, head_size=32, vocab=300)
    config = detect_config(sd)
    assert (config.version, config.n_layer, config.n_embd, config.vocab_size) == (version, 3, 64, 300)
    assert config.dim_ffn == sd["blocks.0.ffn.key.weight"].shape[0]
    for name, value in fields.items():
        assert getattr(config, name) == value, name


def test_unusual_widths_come_from_tensors_not_formulas(official_sd):
    sd = official_sd("7", n_embd=64, head_size=16, lora={"w": 8, "a": 24, "v": 40, "g": 56})
    sd["blocks.0.ffn.key.weight"] = torch.randn(100, 64)
    sd["blocks.0.ffn.value.weight"] = torch.randn(64, 100)
    sd["blocks.1.ffn.key.weight"] = torch.randn(100, 64)
    sd["blocks.1.ffn.value.weight"] = torch.randn(64, 100)
    c = detect_config(sd)
    assert (c.head_size, c.dim_w, c.dim_a, c.dim_v, c.dim_g, c.dim_ffn) == (16, 8, 24, 40, 56, 100)


def test_rwkv7_checkpoints_with_or_without_layer0_value_lora_load_alike(official_sd, tmp_path):
    with_v = official_sd("7", n_embd=64, head_size=16)
    without = {k: v for k, v in with_v.items() if k not in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")}
    assert len(without) == len(with_v) - 3
    torch.save(with_v, tmp_path / "a.pth")
    torch.save(without, tmp_path / "b.pth")
    _same_logits(load_rwkv(tmp_path / "a.pth"), load_rwkv(tmp_path / "b.pth"))


@pytest.mark.parametrize("version", ["4", "5.0", "5.2", "6", "7"])
def test_official_to_ours_to_official_keeps_keys_shapes_and_values(version, official_sd, tmp_path):
    sd = official_sd(version, n_embd=64, head_size=16, layer0_v=False)
    torch.save(sd, tmp_path / "in.pth")
    convert(tmp_path / "in.pth", tmp_path / "ours")
    convert(tmp_path / "ours", tmp_path / "out.pth")
    back = torch.load(tmp_path / "out.pth", weights_only=True)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].shape == value.shape, key
        torch.testing.assert_close(back[key], value, rtol=0, atol=0)


def test_our_format_round_trips_a_model_and_records_its_config(random_model, tmp_path):
    model = random_model("6")
    out = save_rwkv(model, tmp_path / "ckpt")
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "mmrwkv" and meta["kind"] == "rwkv" and meta["config"]["version"] == "6"
    loaded = load_rwkv(out)
    assert loaded.config == model.config
    _same_logits(model, loaded)


def test_saving_over_an_existing_checkpoint_replaces_it_and_leaves_no_temp_dirs(random_model, tmp_path):
    save_rwkv(random_model("7"), tmp_path / "ckpt")
    save_rwkv(random_model("4"), tmp_path / "ckpt")
    assert load_rwkv(tmp_path / "ckpt").config.version == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_dtype_argument_casts_every_parameter(official_sd, tmp_path):
    torch.save(official_sd("7", n_embd=64, head_size=16), tmp_path / "m.pth")
    model = load_rwkv(tmp_path / "m.pth", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    logits, state = model(torch.tensor([[1, 2, 3]]))
    assert logits.dtype == torch.bfloat16 and state.wkv.dtype == torch.float32


def test_legacy_non_zip_pth_loads_without_mmap(official_sd, tmp_path):
    sd = official_sd("5.2", n_embd=64, head_size=16)
    torch.save(sd, tmp_path / "new.pth")
    torch.save(sd, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    _same_logits(load_rwkv(tmp_path / "new.pth"), load_rwkv(tmp_path / "old.pth"))


def test_describe_reports_config_and_parameter_count(official_sd, tmp_path):
    sd = official_sd("6", n_embd=64, head_size=16)
    torch.save(sd, tmp_path / "m.pth")
    info = describe(tmp_path / "m.pth")
    assert info["format"] == "official" and info["config"].version == "6"
    assert info["parameters"] == sum(v.numel() for v in sd.values())


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def _write(path, data):
    torch.save(data, path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, sd: p.with_name("absent.pth"), "no such checkpoint"),
        (lambda p, sd: _truncate(_write(p, sd)), "truncated or corrupt"),
        (lambda p, sd: _write(p, {"weight": torch.zeros(2)}), "not an RWKV checkpoint"),
        (lambda p, sd: _write(p, [torch.zeros(2)]), "not a flat state_dict"),
        (lambda p, sd: _write(p, {**sd, "payload": _Payload()}), "refused to load: the pickle calls .*'print'"),
        (lambda p, sd: _truncate(_write_legacy(p, sd)), r"truncated or corrupt\?\): unexpected (EOF|end of file)"),
        (lambda p, sd: _write(p, _without(sd, "blocks.1.att.k_a")), "missing keys.*blocks.1.att.k_a"),
        (lambda p, sd: _write(p, {**sd, "blocks.0.att.extra": torch.zeros(3)}), "unexpected keys.*att.extra"),
        (lambda p, sd: _write(p, {**sd, "blocks.1.att.w2": torch.zeros(5, 5)}), r"att.w2 has shape \[5, 5\]"),
    ],
    ids=["missing", "truncated", "not-rwkv", "not-dict", "pickle-code", "truncated-legacy", "missing-key",
         "extra-key", "bad-shape"],
)
def test_bad_official_files_raise_checkpoint_error_naming_file_and_problem(make, message, official_sd, tmp_path):
    path = make(tmp_path / "bad.pth", official_sd("7", n_embd=64, head_size=16))
    with pytest.raises(CheckpointError, match=message) as err:
        load_rwkv(path)
    assert path.name in str(err.value)


def _write_legacy(path, data):
    torch.save(data, path, _use_new_zipfile_serialization=False)
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _without(sd, key):
    return {k: v for k, v in sd.items() if k != key}


def test_pickle_code_is_never_executed(official_sd, tmp_path, capsys):
    path = _write(tmp_path / "evil.pth", {**official_sd("4", n_embd=64), "x": _Payload()})
    with pytest.raises(CheckpointError):
        load_rwkv(path)
    assert "pwned" not in capsys.readouterr().out


def test_bad_our_format_directories_raise_checkpoint_error(random_model, tmp_path):
    ckpt = save_rwkv(random_model("7"), tmp_path / "ckpt")
    meta = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**meta, "kind": "multimodal"}))
    with pytest.raises(CheckpointError, match="'kind' is 'multimodal'"):
        load_rwkv(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: invalid JSON"):
        load_rwkv(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "n_embd": 128}}))
    with pytest.raises(CheckpointError, match="emb.weight has shape"):
        load_rwkv(ckpt)
    (ckpt / "config.json").write_text(json.dumps(meta))
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read"):
        load_rwkv(ckpt)


def test_official_export_uses_official_shapes_for_rwkv5_0(random_model, tmp_path):
    save_official(random_model("5.0"), tmp_path / "m.pth")
    sd = torch.load(tmp_path / "m.pth", weights_only=True)
    assert sd["blocks.0.att.time_decay"].shape == (4,) and sd["blocks.0.att.time_first"].shape == (4,)
    assert "blocks.0.att.gate.weight" not in sd and sd["blocks.0.att.time_mix_k"].shape == (1, 1, 64)


def test_load_backbone_weights_copies_into_a_built_model_and_checks_its_shape(official_sd, tmp_path):
    from mmrwkv.checkpoint import load_backbone_weights
    from mmrwkv.rwkv import RWKV, config_for

    torch.save(official_sd("7", n_embd=64, head_size=16, vocab=256), tmp_path / "m.pth")
    reference = load_rwkv(tmp_path / "m.pth")
    target = RWKV(reference.config)
    assert load_backbone_weights(target, tmp_path / "m.pth") is target
    _same_logits(target, reference)
    with pytest.raises(CheckpointError, match="vocab_size=256, the model was built with vocab_size=300"):
        load_backbone_weights(RWKV(config_for("v7-tiny", vocab_size=300, dim_w=32, dim_a=32, dim_g=32)),
                              tmp_path / "m.pth")


def test_training_a_loaded_official_model_never_writes_into_the_file(official_sd, tmp_path):
    path = tmp_path / "m.pth"
    torch.save(official_sd("6", n_embd=64, head_size=16), path)
    before = path.read_bytes()
    model = load_rwkv(path)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(p.requires_grad for p in model.parameters())
    assert path.read_bytes() == before
