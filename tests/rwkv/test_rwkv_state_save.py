"""State.save (tuned states, saved chat states) writes aside and renames: a directory is refused, a failed save
keeps the earlier file whole."""

import pytest
import torch

from mmrwkv.errors import CheckpointError
from mmrwkv.rwkv import RWKVConfig
from mmrwkv.rwkv.state import State

CONFIG = RWKVConfig(version="6", n_layer=2, n_embd=32, vocab_size=16, head_size=16)


def test_a_directory_is_refused_and_kept(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'state'}: is a directory"):
        State.zeros(CONFIG, 1).save(tmp_path / "state")
    assert (tmp_path / "state" / "notes.txt").read_text() == "mine"


def test_a_failed_save_keeps_the_earlier_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "tuned.safetensors"
    State.zeros(CONFIG, 1).save(path)
    before = path.read_bytes()
    real = safetensors.torch.save_file

    def half_written(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    state = State.zeros(CONFIG, 1)
    state.wkv.fill_(1.0)
    with pytest.raises(OSError, match="No space"):
        state.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert torch.equal(State.load(path, config=CONFIG).wkv, torch.zeros_like(state.wkv))
