"""A saved multimodal checkpoint carries its tokenizer file: copied or moved elsewhere (another clone, another
machine) it loads with the same vocabulary after the file it was trained with is gone."""

import json
import shutil

import torch

from mmrwkv.multimodal import MultimodalRWKV, _bundle_tokenizer
from mmrwkv.tokenizer import load_tokenizer


def test_checkpoint_copied_away_from_its_tokenizer_loads_the_same(tmp_path, tiny_model, small_tokenizer):
    source = tmp_path / "train" / "tokenizer.json"
    source.parent.mkdir()
    shutil.copyfile(small_tokenizer, source)
    model = MultimodalRWKV.from_config({**tiny_model.config, "tokenizer": str(source)})
    model.load_state_dict(tiny_model.state_dict())
    saved = model.save(tmp_path / "train" / "final")
    assert json.loads((saved / "config.json").read_text())["tokenizer"] == "tokenizer.json"
    moved = shutil.move(str(saved), str(tmp_path / "elsewhere"))
    source.unlink()

    loaded = MultimodalRWKV.load(moved).eval()
    text = "what color is the shape?"
    assert loaded.tokenizer.encode(text) == load_tokenizer(small_tokenizer).encode(text)
    ids = torch.tensor([loaded.tokenizer.encode(text)])
    with torch.no_grad():
        assert torch.equal(loaded(ids, {})[0], tiny_model.eval()(ids, {})[0])
    # saved again (a later stage, another copy) it still carries the file
    again = loaded.save(tmp_path / "again")
    assert (again / "tokenizer.json").read_bytes() == (tmp_path / "elsewhere" / "tokenizer.json").read_bytes()


def test_world_and_missing_specs_are_kept_as_named(tmp_path):
    assert _bundle_tokenizer("world", tmp_path) == "world"
    assert _bundle_tokenizer(str(tmp_path / "absent.json"), tmp_path) == str(tmp_path / "absent.json")
    assert list(tmp_path.iterdir()) == []
