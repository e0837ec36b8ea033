"""RWKV-7 state-tuned files (`blocks.N.att.time_state`) are refused with the reason: their layout is not fixed
([H, value, key] from trainers on the authors' kernels, [H, key, value] from flash-linear-attention ones, same
shape), and neither the spec nor the rwkv package settles it. The route the message gives works: a tuned state set
on the model is kept by our format and is the start state of every sequence."""

import pytest
import torch

from mmrwkv.checkpoint import load_rwkv, load_tuned_state, save_official, save_rwkv
from mmrwkv.errors import CheckpointError
from mmrwkv.rwkv.state import State

WHY = ("layout of an RWKV-7 time_state is not fixed", "[H, value, key]", "[H, key, value]",
       "wkv is [L, 1, H, value, key]")


@pytest.fixture
def v7(release_sd, tmp_path):
    """A small RWKV-7 checkpoint in the release layout and a state-tuning file for it ([H, N, N] per layer)."""
    sd = {k: v.float() for k, v in release_sd("7", torch.float32, vocab=512).items()}
    H, N = sd["blocks.0.att.r_k"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    gen = torch.Generator().manual_seed(3)
    state = {f"blocks.{i}.att.time_state": torch.randn(H, N, N, generator=gen) for i in range(layers)}
    torch.save(sd, tmp_path / "base.pth")
    torch.save({**sd, **state}, tmp_path / "tuned.pth")
    torch.save(state, tmp_path / "state.pth")
    return tmp_path, state


def _assert_why(err: pytest.ExceptionInfo, name: str) -> None:
    message = str(err.value)
    assert name in message and "not RWKV-7" in message
    for part in WHY:
        assert part in message, part


def test_v7_time_state_is_refused_saying_why(v7):
    root, _ = v7
    with pytest.raises(CheckpointError) as err:
        load_rwkv(root / "tuned.pth")
    _assert_why(err, "tuned.pth")
    model = load_rwkv(root / "base.pth")
    with pytest.raises(CheckpointError) as err:
        load_tuned_state(model, root / "state.pth")
    _assert_why(err, "state.pth")
    assert model.tuned_state is None


@torch.no_grad()
def test_the_route_the_message_gives_keeps_the_state(v7, tmp_path):
    root, tensors = v7
    model = load_rwkv(root / "base.pth").eval()
    # the authors' [H, value, key] is already the layout of our RWKV-7 state
    wkv = torch.stack([tensors[f"blocks.{i}.att.time_state"] for i in range(len(tensors))])[:, None]
    zeros = State.zeros(model.config, 1)
    model.tuned_state = type(zeros)(zeros.att_x_prev, wkv.contiguous(), zeros.ffn_x_prev)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    tuned, _ = model(ids)
    plain, _ = load_rwkv(root / "base.pth").eval()(ids, model.init_state(1))
    assert torch.equal(tuned, plain)
    assert not torch.allclose(tuned, load_rwkv(root / "base.pth").eval()(ids)[0])

    reloaded = load_rwkv(save_rwkv(model, tmp_path / "ours")).eval()
    assert torch.equal(reloaded.tuned_state.wkv, model.tuned_state.wkv)
    assert torch.equal(reloaded(ids)[0], tuned)
    with pytest.raises(CheckpointError) as err:
        save_official(model, tmp_path / "out.pth")
    assert "out.pth: an RWKV-7 tuned state is not written as time_state" in str(err.value)
    assert not (tmp_path / "out.pth").exists()


def test_rwkv4_time_state_is_refused_saying_why(release_sd, tmp_path):
    sd = release_sd("4", torch.float32, vocab=128)
    sd["blocks.0.att.time_state"] = torch.zeros(sd["emb.weight"].shape[1], 1, 1)
    torch.save(sd, tmp_path / "v4.pth")
    with pytest.raises(CheckpointError, match=r"v4\.pth: .*RWKV-4's state is per channel"):
        load_rwkv(tmp_path / "v4.pth")


def test_info_says_the_v7_time_state_is_refused(v7, capsys):
    from mmrwkv.cli import main

    root, _ = v7
    assert main(["info", str(root / "tuned.pth")]) == 0
    assert "time_state keys that loading refuses for RWKV-7" in capsys.readouterr().out
