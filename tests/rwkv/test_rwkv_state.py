"""Typed states: batching, copying, devices, safetensors round trips and shape checks."""

from __future__ import annotations

import pytest
import torch

from mmrwkv.errors import CheckpointError
from mmrwkv.rwkv import RWKV4State, RWKV6State, RWKV7State, State, config_for


def test_init_state_has_the_documented_shapes_per_generation(random_model):
    s7 = random_model("7").init_state(3)
    assert type(s7) is RWKV7State
    assert s7.att_x_prev.shape == (2, 3, 64) and s7.ffn_x_prev.shape == (2, 3, 64)
    assert s7.wkv.shape == (2, 3, 4, 16, 16) and s7.wkv.dtype == torch.float32
    s4 = random_model("4").init_state(2)
    assert type(s4) is RWKV4State and s4.wkv.shape == (2, 2, 3, 64)
    assert torch.all(s4.wkv[:, :, 2] == -1e38) and torch.all(s4.wkv[:, :, :2] == 0)


def test_nbytes_counts_every_field():
    state = State.zeros(config_for("v7-tiny"), 2)
    L, B, C, H, N = 2, 2, 64, 4, 16
    assert state.nbytes == 4 * (2 * L * B * C + L * B * H * N * N)


def test_split_and_cat_round_trip_and_index_matches_split(random_model):
    model = random_model("6")
    with torch.no_grad():
        _, state = model(torch.randint(0, 256, (3, 4)))
    parts = state.split()
    assert [p.batch_size for p in parts] == [1, 1, 1]
    joined = State.cat(parts)
    assert type(joined) is RWKV6State
    torch.testing.assert_close(joined.wkv, state.wkv, rtol=0, atol=0)
    torch.testing.assert_close(state[-1].att_x_prev, parts[2].att_x_prev, rtol=0, atol=0)
    assert state[0:2].batch_size == 2


def test_cat_of_states_continues_like_each_row_alone(random_model):
    model = random_model("7")
    a, b = torch.randint(0, 256, (1, 3)), torch.randint(0, 256, (1, 5))
    nxt = torch.randint(0, 256, (2, 1))
    with torch.no_grad():
        _, sa = model(a)
        _, sb = model(b)
        joint, _ = model(nxt, State.cat([sa, sb]))
        alone_a, _ = model(nxt[:1], sa)
        alone_b, _ = model(nxt[1:], sb)
    torch.testing.assert_close(joint, torch.cat([alone_a, alone_b]), rtol=1e-4, atol=1e-5)


def test_cat_rejects_mixed_generations():
    with pytest.raises(ValueError, match="different generations"):
        State.cat([State.zeros(config_for("v6-tiny"), 1), State.zeros(config_for("v7-tiny"), 1)])


def test_clone_is_independent_and_to_keeps_wkv_fp32():
    state = State.zeros(config_for("v7-tiny"), 1)
    copy = state.clone()
    copy.wkv.add_(1.0)
    assert state.wkv.abs().sum() == 0
    half = state.to(dtype=torch.bfloat16)
    assert half.att_x_prev.dtype == torch.bfloat16 and half.wkv.dtype == torch.float32
    assert type(half) is RWKV7State


def test_save_load_round_trip_keeps_class_and_values(random_model, tmp_path):
    model = random_model("5.2")
    with torch.no_grad():
        _, state = model(torch.randint(0, 256, (2, 3)))
    state.save(tmp_path / "s.safetensors")
    loaded = State.load(tmp_path / "s.safetensors", config=model.config)
    assert type(loaded) is type(state)
    for name in ("att_x_prev", "wkv", "ffn_x_prev"):
        torch.testing.assert_close(getattr(loaded, name), getattr(state, name), rtol=0, atol=0)


def test_loading_a_state_for_another_model_shape_names_the_field(tmp_path):
    State.zeros(config_for("v7-tiny"), 1).save(tmp_path / "s.safetensors")
    with pytest.raises(CheckpointError, match="state field att_x_prev has shape"):
        State.load(tmp_path / "s.safetensors", config=config_for("v7-tiny", n_embd=128))
    with pytest.raises(CheckpointError, match="state field wkv has shape"):
        State.load(tmp_path / "s.safetensors", config=config_for("v7-tiny", head_size=32))
    with pytest.raises(CheckpointError, match="RWKV-7 cannot be used with an RWKV-6 model"):
        State.load(tmp_path / "s.safetensors", config=config_for("v6-tiny"))


def test_loading_a_broken_state_file_raises_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        State.load(bad)
    with pytest.raises(CheckpointError, match="not found"):
        State.load(tmp_path / "missing.safetensors")
