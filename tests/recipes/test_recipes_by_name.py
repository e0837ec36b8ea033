"""Recipes by name: `mmrwkv run NAME` finds the packaged recipe; `mmrwkv recipes list | show | copy | validate`."""

import pytest
import yaml

from mmrwkv.cli import main
from mmrwkv.errors import ConfigError
from mmrwkv.recipe_catalog import encoder_tokens, packaged_recipes, resolve_recipe, validate_recipe


def test_a_packaged_name_resolves_and_a_local_file_wins(tmp_path, monkeypatch):
    assert resolve_recipe("llava_v7") == packaged_recipes()["llava_v7"]
    assert resolve_recipe("llava_v7.yaml").name == "llava_v7.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llava_v7").write_text("name: mine\n")
    assert resolve_recipe("llava_v7").resolve() == tmp_path / "llava_v7"
    with pytest.raises(ConfigError, match="no packaged recipe has that name; packaged recipes: .*easy_vqa"):
        resolve_recipe("no_such_recipe")


def test_train_with_an_unknown_name_lists_the_packaged_ones(capsys):
    assert main(["train", "no_such_recipe"]) == 2
    assert "llava_v7" in capsys.readouterr().err


def test_list_show_copy(tmp_path, capsys):
    assert main(["recipes", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("easy_vqa", "llava_v7", "scenes_caption"))
    assert main(["recipes", "show", "llava_v7"]) == 0
    assert "ViT-L-14-336" in capsys.readouterr().out
    assert main(["recipes", "copy", "easy_vqa", str(tmp_path)]) == 0
    copied = tmp_path / "easy_vqa.yaml"
    assert copied.read_bytes() == packaged_recipes()["easy_vqa"].read_bytes()
    copied.write_text("edited")
    assert main(["recipes", "copy", "easy_vqa", str(copied)]) == 2  # never overwrites silently
    assert copied.read_text() == "edited" and "already exists" in capsys.readouterr().err
    assert main(["recipes", "copy", "easy_vqa", str(copied), "--force"]) == 0


def test_open_clip_token_count_comes_from_the_config_without_weights():
    assert encoder_tokens("open_clip", {"arch": "ViT-L-14-336", "pretrained": "openai", "layer": -2}) == 576
    assert encoder_tokens("open_clip", {"arch": "ViT-B-32", "cls_token": True}) == 50


def _recipe(tmp_path, **changes) -> str:
    raw = {
        "name": "t",
        "model": {"size": "v7-tiny"},
        "encoders": {"image": {"name": "tiny_vit", "image_size": 48, "patch_size": 8}},
        "projector": {"image": "linear"},
        "data": {"kind": "shapes", "max_text_tokens": 64},
    }
    for key, value in changes.items():
        section, field = key.split("__")
        raw.setdefault(section, {})[field] = value
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_validate_passes_a_good_recipe_and_names_each_problem(tmp_path, capsys):
    assert validate_recipe(_recipe(tmp_path)).ok
    small = validate_recipe(_recipe(tmp_path, data__max_text_tokens=40))
    assert any("max_text_tokens: 40 is less than one image item's 36 tokens" in p for p in small.problems)
    pooled = validate_recipe(_recipe(tmp_path, data__max_text_tokens=40, projector__image="linear+avgpool:4"))
    assert pooled.ok, pooled.problems
    missing = validate_recipe(_recipe(tmp_path, model__checkpoint="nowhere/model.pth"))
    assert missing.problems == ["model.checkpoint: nowhere/model.pth not found"]
    start = validate_recipe(_recipe(tmp_path, train__init_from="runs/nothing/final"))
    assert start.problems == ["train.init_from: runs/nothing/final not found (no earlier stage writes it)"]
    typed = validate_recipe(_recipe(tmp_path, data__max_text_tokens="many"))
    assert len(typed.problems) == 1 and "data.max_text_tokens" in typed.problems[0]
    assert main(["recipes", "validate", _recipe(tmp_path, data__max_text_tokens=40)]) == 1
    assert "problem: data.max_text_tokens" in capsys.readouterr().out


def test_a_staged_recipe_may_start_from_an_earlier_stage(tmp_path):
    raw = yaml.safe_load(open(_recipe(tmp_path)))
    raw["stages"] = [{"name": "a"}, {"name": "b"}]
    (tmp_path / "staged.yaml").write_text(yaml.safe_dump(raw))
    result = validate_recipe(tmp_path / "staged.yaml")
    assert result.ok, result.problems
