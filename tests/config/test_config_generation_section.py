"""A recipe's `generation` section is the generator's `SamplingConfig` with recipe defaults: one definition of the
fields and their rules, errors naming the recipe path, and `to_sampling()` carrying every value across."""

import dataclasses

import pytest

from mmrwkv.config import GenerationConfig, config_from_dict
from mmrwkv.errors import ConfigError
from mmrwkv.inference.generate import SamplingConfig


def test_generation_section_has_exactly_the_sampling_fields():
    assert [f.name for f in dataclasses.fields(GenerationConfig)] == [
        f.name for f in dataclasses.fields(SamplingConfig)
    ]


def test_recipe_defaults_end_a_turn_and_keep_answers_short():
    cfg = config_from_dict({})
    assert cfg.generation.stop == ["\n\n"] and cfg.generation.max_tokens == 64
    assert SamplingConfig().stop == [] and SamplingConfig().max_tokens == 256


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [("top_p", 0, "(0, 1]"), ("temperature", -1, ">= 0"), ("penalty_decay", 2, "[0, 1]"), ("stop", [""], "non-empty")],
)
def test_bad_values_name_the_recipe_path(key, value, rule):
    with pytest.raises(ConfigError, match=rf"generation\.{key} = .* must be .*{__import__('re').escape(rule)}"):
        config_from_dict({"generation": {key: value}})


def test_to_sampling_carries_every_value():
    raw = {
        "temperature": 0.7,
        "top_k": 5,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "penalty_decay": 0.99,
        "max_tokens": 9,
        "stop": ["x"],
        "seed": 3,
        "banned_ids": [7],
        "eos_ids": [1, 2],
    }
    sampling = config_from_dict({"generation": raw}).generation.to_sampling()
    assert type(sampling) is SamplingConfig
    assert dataclasses.asdict(sampling) == raw
