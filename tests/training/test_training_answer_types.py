"""`data.answer_types` keeps the training questions of the named answer types; evaluation sees every question."""

import pytest

from mmrwkv.config import load_config
from mmrwkv.data.sample import Dataset, Sample
from mmrwkv.errors import ConfigError
from mmrwkv.training.build import build_datasets, build_model, select_answer_types

from .conftest import RECIPE


def _dataset() -> Dataset:
    kinds = ["yes/no", "other", "number", "other", None]
    samples = [Sample(id=f"s{i}", question="q?", answers=["a"], answer_type=k) for i, k in enumerate(kinds)]
    return Dataset("toy", "train", samples, skipped=2, problems=["p"])


def test_select_answer_types_keeps_named_types_and_the_bookkeeping():
    data = _dataset()
    kept = select_answer_types(data, ["other", "number"])
    assert [s.id for s in kept] == ["s1", "s2", "s3"]
    assert (kept.name, kept.split, kept.skipped, kept.problems) == ("toy", "train", 2, ["p"])
    assert select_answer_types(data, []) is data


def test_select_answer_types_that_keep_nothing_name_the_types_present():
    with pytest.raises(ConfigError, match=r"data.answer_types \['count'\].*'None', 'number', 'other', 'yes/no'"):
        select_answer_types(_dataset(), ["count"])


def test_recipe_answer_types_filter_training_questions_only(tmp_path, tiny):
    sizes = {"data.sizes": "{train: 60, test: 12}"}
    cfg = load_config(RECIPE, tiny(tmp_path / "a", **{"data.answer_types": "[other]"}, **sizes))
    model = build_model(cfg)
    train_set, _, _ = build_datasets(cfg, model)
    assert len(train_set) > 0
    assert all(s.answer_type == "other" for s in train_set.samples)
    assert all(a not in ("yes", "no") for s in train_set.samples for a in s.answers)
    # the tokenizer is trained on the whole split, as without the filter: the next stage can keep it
    unfiltered = build_model(load_config(RECIPE, tiny(tmp_path / "b", **sizes)))
    text = "is there a red shape?\n\nAssistant: yes"
    assert model.tokenizer.encode(text) == unfiltered.tokenizer.encode(text)
    full_set, _, _ = build_datasets(load_config(RECIPE, tiny(tmp_path / "b", **sizes)), unfiltered)
    assert len(full_set) > len(train_set)
