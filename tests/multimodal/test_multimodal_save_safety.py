"""`MultimodalRWKV.save` replaces only an empty directory or one of our checkpoints, and never leaves a half-written
one: the checkpoint is written aside and renamed into place."""

import pytest
import torch

from mmrwkv.checkpoint import save_rwkv
from mmrwkv.errors import CheckpointError
from mmrwkv.multimodal import MultimodalRWKV


def test_save_refuses_a_directory_of_other_files(tiny_model, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match=rf"{notes}: exists and is not an mmrwkv checkpoint"):
        tiny_model.save(notes)
    assert [p.name for p in notes.iterdir()] == ["todo.txt"] and (notes / "todo.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_save_refuses_a_file(tiny_model, tmp_path):
    target = tmp_path / "model"
    target.write_text("a file")
    with pytest.raises(CheckpointError, match=rf"{target}: is a file"):
        tiny_model.save(target)
    assert target.read_text() == "a file"


def test_save_replaces_an_empty_directory_or_one_of_ours(tiny_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert MultimodalRWKV.load(tiny_model.save(empty)).backbone.config == tiny_model.backbone.config
    # a multimodal checkpoint and a plain RWKV one of ours are both replaced whole
    text_model = save_rwkv(tiny_model.backbone, tmp_path / "text")
    for target in (empty, text_model):
        with torch.no_grad():
            tiny_model.backbone.emb.weight.add_(1.0)
        loaded = MultimodalRWKV.load(tiny_model.save(target))
        assert torch.equal(loaded.backbone.emb.weight, tiny_model.backbone.emb.weight)
        assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_a_failed_save_leaves_the_old_checkpoint_whole(tiny_model, tmp_path, monkeypatch):
    import safetensors.torch

    target = tiny_model.save(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with torch.no_grad():
        tiny_model.backbone.emb.weight.add_(1.0)
    with pytest.raises(OSError, match="No space"):
        tiny_model.save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
