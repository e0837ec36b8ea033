"""Overrides that enter a list: `stages.<name or index>.train.max_steps=5` (how a staged recipe is shortened)."""

import pytest

from mmrwkv.config import apply_overrides, config_from_dict, expand_stages
from mmrwkv.errors import ConfigError

RAW = {
    "train": {"max_steps": 100, "output_dir": "out"},
    "stages": [
        {"name": "media", "train": {"max_steps": 400}},
        {"name": "all", "train": {"max_steps": 3000}},
    ],
}


def test_stage_addressed_by_name_and_by_index():
    cfg = config_from_dict(RAW, ["stages.media.train.max_steps=5", "stages.1.train.max_steps=7"])
    assert [s.train.max_steps for s in expand_stages(cfg)] == [5, 7]
    # the top-level value is what a stage without its own max_steps inherits; the stages keep theirs
    cfg = config_from_dict(RAW, ["train.max_steps=3"])
    assert [s.train.max_steps for s in expand_stages(cfg)] == [400, 3000]


def test_list_override_sets_a_new_key_inside_the_entry_and_copies():
    out = apply_overrides(RAW, ["stages.all.data.answer_types=[other]"])
    assert out["stages"][1] == {"name": "all", "train": {"max_steps": 3000}, "data": {"answer_types": ["other"]}}
    assert "data" not in RAW["stages"][1]


def test_list_entry_replaced_by_index():
    assert apply_overrides({"eval": {"metrics": ["bleu", "cider"]}}, ["eval.metrics.1=rouge_l"]) == {
        "eval": {"metrics": ["bleu", "rouge_l"]}
    }


@pytest.mark.parametrize(
    ("override", "pieces"),
    [
        ("stages.nope.train.max_steps=5", ["'stages' has no entry 'nope'", "0, 1, media, all"]),
        ("stages.2.train.max_steps=5", ["'stages' has no entry '2'"]),
        ("stages.media.name.x=1", ["'stages.media.name' is 'media', not a section"]),
    ],
)
def test_bad_list_overrides_name_the_path_and_the_valid_entries(override, pieces):
    with pytest.raises(ConfigError) as err:
        apply_overrides(RAW, [override])
    for piece in pieces:
        assert piece in str(err.value)
