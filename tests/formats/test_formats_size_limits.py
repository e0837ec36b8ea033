"""Model sizes are computed from a config or a checkpoint's keys and refused above a limit before anything is
allocated; layer indices must be contiguous (a `.pth` with one `blocks.999999.*` key once ran for hours)."""

import json
import time

import pytest
import torch

from mmrwkv import limits
from mmrwkv.checkpoint import describe, load_rwkv
from mmrwkv.errors import CheckpointError, ConfigError
from mmrwkv.multimodal import MultimodalRWKV
from mmrwkv.rwkv import RWKV, config_for

TINY_BACKBONE = {"size": "v7-tiny", "n_layer": 1, "n_embd": 32, "head_size": 16, "vocab_size": 300}


@pytest.mark.parametrize("version", ["4", "5.2", "6", "7"])
def test_the_parameter_count_from_the_config_is_the_models(version):
    config = config_for("v7-tiny", version=version, n_layer=3, n_embd=64, head_size=32, vocab_size=500)
    assert limits.model_parameters(config) == RWKV(config).num_parameters()


def test_a_config_with_a_billion_token_vocabulary_is_refused_before_allocating():
    start = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=r"multimodal config: backbone: .*parameters .*vocab_size=1000000000.*"
        r"MMRWKV_MAX_PARAMS",
    ):
        MultimodalRWKV.from_config({"backbone": {**TINY_BACKBONE, "vocab_size": 10**9}, "tokenizer": "world"})
    assert time.perf_counter() - start < 5


def test_a_saved_config_with_a_huge_vocabulary_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"format": "mmrwkv", "kind": "multimodal", "backbone": {**TINY_BACKBONE, "vocab_size": 10**9}})
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"config\.json: multimodal config: backbone: .* over the limit"):
        MultimodalRWKV.load(tmp_path)


def test_the_limits_can_be_lowered_and_raised(monkeypatch):
    config = config_for("v7-tiny", n_layer=2, n_embd=64, vocab_size=1000)
    monkeypatch.setenv("MMRWKV_MAX_PARAMS", "1000")
    with pytest.raises(ConfigError, match="over the limit of 1,000"):
        limits.check_model_size(config, "x")
    monkeypatch.setenv("MMRWKV_MAX_PARAMS", "1e12")
    monkeypatch.setenv("MMRWKV_MAX_MODEL_BYTES", "1000")
    with pytest.raises(ConfigError, match="GiB of weights.*MMRWKV_MAX_MODEL_BYTES"):
        limits.check_model_size(config, "x")
    monkeypatch.setenv("MMRWKV_MAX_MODEL_BYTES", "lots")
    with pytest.raises(ConfigError, match="MMRWKV_MAX_MODEL_BYTES='lots': not a number"):
        limits.check_model_size(config, "x")
    monkeypatch.delenv("MMRWKV_MAX_MODEL_BYTES")
    assert limits.check_model_size(config, "x") == RWKV(config).num_parameters()


def test_a_pth_with_a_far_layer_index_is_refused_at_once(tmp_path, release_sd):
    sd = release_sd("7", torch.float32, vocab=1000)
    sd["blocks.999999.ln1.weight"] = torch.ones(128)
    path = tmp_path / "far.pth"
    torch.save(sd, path)
    start = time.perf_counter()
    for read in (load_rwkv, describe):
        with pytest.raises(
            CheckpointError,
            match=r"far\.pth: layer indices are not contiguous: blocks\.999999\.\* "
            r"follows blocks\.2\.\*",
        ):
            read(path)
    assert time.perf_counter() - start < 5


def test_a_pth_missing_a_middle_layer_says_which(tmp_path, release_sd):
    sd = {k: v for k, v in release_sd("7", torch.float32, vocab=1000).items() if not k.startswith("blocks.1.")}
    path = tmp_path / "gap.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"blocks\.2\.\* follows blocks\.0\.\*"):
        load_rwkv(path)


def test_a_pth_over_the_parameter_limit_is_refused_before_building(tmp_path, release_sd, monkeypatch):
    path = tmp_path / "ok.pth"
    torch.save(release_sd("7", torch.float32, vocab=1000), path)
    assert load_rwkv(path).config.n_layer == 3
    monkeypatch.setenv("MMRWKV_MAX_PARAMS", "10000")
    with pytest.raises(ConfigError, match=r"ok\.pth: .* parameters .* over the limit of 10,000"):
        load_rwkv(path)


def _overcommits() -> bool:
    try:
        return open("/proc/sys/vm/overcommit_memory").read().strip() == "1"
    except OSError:
        return True


# with overcommit "always", a 6 TB allocation succeeds and its initialisation would run the machine out of memory
@pytest.mark.skipif(_overcommits(), reason="vm.overcommit_memory=1 (or unknown): a huge allocation would not fail")
def test_an_encoder_too_wide_to_allocate_is_one_config_error():
    config = {
        "backbone": TINY_BACKBONE,
        "tokenizer": "world",
        "encoders": {"image": {"name": "tiny_cnn", "kwargs": {"image_size": 16, "width": 400_000, "grid": 2}}},
    }
    with pytest.raises(ConfigError, match=r"encoders\.image: its sizes need more memory than this machine gives \("):
        MultimodalRWKV.from_config(config)
