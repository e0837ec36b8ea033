"""mmrwkv.config is split into the recipe schema and the generic typed-YAML machinery; old imports still work."""

from pathlib import Path

import pytest

import mmrwkv.config as config
import mmrwkv.config_convert as convert
from mmrwkv.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = ["RecipeConfig", "ModelConfig", "EncoderSpec", "ProjectorSpec", "TrainableConfig", "DataConfig", "LRConfig",
          "TrainConfig", "ReportConfig", "EvalConfig", "GenerationConfig", "TemplateConfig", "load_config",
          "config_from_dict", "config_to_dict", "save_config", "expand_stages", "apply_overrides", "parse_override",
          "METRICS", "DATA_KINDS", "PLACEMENTS", "VERSIONS"]


@pytest.mark.parametrize("name", ["config.py", "config_convert.py"])
def test_config_modules_stay_under_the_style_guide_limit(name):
    lines = (ROOT / "mmrwkv" / name).read_text().count("\n")
    assert lines < 500, f"mmrwkv/{name} has {lines} lines"


def test_every_public_name_still_imports_from_mmrwkv_config():
    missing = [name for name in PUBLIC if not hasattr(config, name)]
    assert not missing
    assert config.apply_overrides is convert.apply_overrides
    assert config.parse_override is convert.parse_override


def test_machinery_knows_no_recipe():
    text = (ROOT / "mmrwkv" / "config_convert.py").read_text()
    assert "RecipeConfig" not in text and "from mmrwkv.config " not in text


def test_diff_raw_names_each_differing_leaf():
    old = {"train": {"lr": {"backbone": 1e-3}, "epochs": 2}, "model": {"size": "v7-tiny"}}
    new = {"train": {"lr": {"backbone": 3e-3}, "epochs": 2}, "model": {"size": "v7-tiny", "checkpoint": "x"}}
    assert convert.diff_raw(old, new) == [("model.checkpoint", "<absent>", "x"),
                                          ("train.lr.backbone", 1e-3, 3e-3)]
    assert convert.diff_raw(old, old) == []


def test_convert_dataclass_still_names_the_path():
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        config.config_from_dict({"train": {"epochs": "two"}})
