"""State-tuned checkpoints: RWKV-5/6 files with optional `blocks.N.att.time_state` keys ([H, value, key] per
layer) start every sequence from that state, as the authors' `rwkv` package runs them; state-only files (the
output of state tuning) load onto their base model."""

import os
import subprocess
import sys

import pytest
import torch

from mmrwkv.checkpoint import convert, load_rwkv, load_tuned_state, read_official
from mmrwkv.errors import CheckpointError

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6]
ORACLE = r"""
import sys, torch
from rwkv.model import RWKV
model = RWKV(model=sys.argv[1], strategy="cpu fp32", verbose=False)
tokens = [int(t) for t in sys.argv[3].split(",")]
full, _ = model.forward(tokens, None, full_output=True)
torch.save(full.float().clone(), sys.argv[2])
"""


def _time_state(sd: dict, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    H, N = sd["blocks.0.att.time_faaaa"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    return {f"blocks.{i}.att.time_state": torch.randn(H, N, N, generator=gen) for i in range(layers)}


@pytest.fixture
def tuned(release_sd, tmp_path):
    sd = {k: v.float() for k, v in release_sd("6", torch.float32, vocab=512).items()}
    state = _time_state(sd)
    torch.save({**sd, **state}, tmp_path / "tuned.pth")
    torch.save(sd, tmp_path / "base.pth")
    torch.save(state, tmp_path / "state.pth")
    return tmp_path


def test_time_state_is_the_start_state_like_the_rwkv_package(tuned):
    pytest.importorskip("rwkv")
    env = {**os.environ, "RWKV_JIT_ON": "0", "RWKV_CUDA_ON": "0", "OMP_NUM_THREADS": "1"}
    out = tuned / "oracle.pt"
    args = [sys.executable, "-c", ORACLE, str(tuned / "tuned"), str(out), ",".join(map(str, TOKENS))]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    oracle = torch.load(out, weights_only=True)
    model = load_rwkv(tuned / "tuned.pth").eval()
    base = load_rwkv(tuned / "base.pth").eval()
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        ours, _ = model(ids)
        plain, _ = base(ids)
        steps, state = [], None
        for t in TOKENS:
            logits, state = model(torch.tensor([[t]]), state)
            steps.append(logits[0, -1])
    scale = oracle.abs().max()
    assert (ours[0] - oracle).abs().max() / scale < 1e-4
    assert (torch.stack(steps) - oracle).abs().max() / scale < 1e-4
    # the tuned state matters: the base model's logits differ
    assert (plain[0] - oracle).abs().max() / scale > 1e-2


def test_info_reports_the_tuned_state(tuned, capsys):
    from mmrwkv.cli import main

    assert main(["info", str(tuned / "tuned.pth")]) == 0
    assert "tuned state" in capsys.readouterr().out
    assert main(["info", str(tuned / "base.pth")]) == 0
    assert "tuned state" not in capsys.readouterr().out
    convert(tuned / "tuned.pth", tuned / "ours")
    assert main(["info", str(tuned / "ours")]) == 0
    assert "tuned state" in capsys.readouterr().out


def test_tuned_state_survives_conversion_both_ways_and_batches(tuned):
    model = load_rwkv(tuned / "tuned.pth").eval()
    convert(tuned / "tuned.pth", tuned / "ours")
    convert(tuned / "ours", tuned / "back.pth")
    before, after = read_official(tuned / "tuned.pth"), read_official(tuned / "back.pth")
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
    again = load_rwkv(tuned / "ours").eval()
    ids = torch.tensor([TOKENS, TOKENS[::-1]])
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = again(ids)
        one, _ = model(ids[1:])
    assert torch.equal(a, b) and torch.allclose(a[1:], one, atol=1e-5)
    start = model.init_state(2)
    assert start.batch_size == 2 and torch.equal(start.wkv[:, 1], model.tuned_state.wkv[:, 0])
    assert not start.att_x_prev.any()


def test_state_only_file_is_named_and_loads_onto_its_base_model(tuned):
    with pytest.raises(CheckpointError, match=r"state\.pth: a state-tuning file .*load_tuned_state"):
        load_rwkv(tuned / "state.pth")
    model = load_tuned_state(load_rwkv(tuned / "base.pth"), tuned / "state.pth").eval()
    reference = load_rwkv(tuned / "tuned.pth").eval()
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        assert torch.equal(model(ids)[0], reference(ids)[0])
    with pytest.raises(CheckpointError, match=r"base\.pth: no blocks\.N\.att\.time_state"):
        load_tuned_state(model, tuned / "base.pth")


def test_time_state_of_wrong_shape_or_generation_is_refused(release_sd, tuned):
    sd = read_official(tuned / "tuned.pth")
    sd["blocks.1.att.time_state"] = sd["blocks.1.att.time_state"][:, :8]
    torch.save(sd, tuned / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth: blocks\.1\.att\.time_state is shape \[2, 8, 64\]"):
        load_rwkv(tuned / "bad.pth")
    v7 = release_sd("7", torch.bfloat16, vocab=512)
    v7["blocks.0.att.time_state"] = torch.zeros(2, 64, 64)
    torch.save(v7, tuned / "v7.pth")
    with pytest.raises(CheckpointError, match=r"v7\.pth: time_state .* RWKV-5/6, not RWKV-7"):
        load_rwkv(tuned / "v7.pth")
