"""Recipe config: strict loading, typed fields, overrides, save/load round trip, multi-stage expansion."""

import pytest
import yaml

from mmrwkv.config import (
    EncoderSpec,
    ProjectorSpec,
    RecipeConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    expand_stages,
    load_config,
    save_config,
)
from mmrwkv.errors import ConfigError

RECIPE = {
    "name": "tiny-vqa",
    "model": {"version": 7, "size": "v7-tiny", "tokenizer": "bpe", "bpe_vocab_size": 512},
    "encoders": {"image": {"name": "open_clip", "arch": "ViT-B-32", "pretrained": None}},
    "projector": {"image": "mlp2x_gelu+avgpool:4"},
    "trainable": {"backbone": "lora", "lora_rank": 4},
    "data": {"kind": "shapes", "root": "data/shapes", "sizes": {"train": 64, "val": 16}, "seed": 3},
    "train": {"lr": {"projector": 2e-3, "backbone": "1e-4"}, "max_steps": 10, "strategy": "ddp"},
    "eval": {"metrics": ["exact_match", "vqa_accuracy"], "report": {"num_examples": 2}},
    "generation": {"top_k": 1, "max_tokens": 8},
    "template": {"placement": "first"},
}


def test_sections_map_onto_typed_dataclasses():
    cfg = config_from_dict(RECIPE)
    assert isinstance(cfg, RecipeConfig)
    assert cfg.model.version == "7"
    assert cfg.encoders["image"] == EncoderSpec("open_clip", {"arch": "ViT-B-32", "pretrained": None})
    assert cfg.projector["image"] == ProjectorSpec("mlp2x_gelu", "avgpool:4")
    assert cfg.trainable.backbone == "lora" and cfg.trainable.lora_rank == 4
    assert cfg.data.sizes == {"train": 64, "val": 16}
    # a YAML `1e-4` arrives as a string and is read as a float
    assert cfg.train.lr.backbone == pytest.approx(1e-4) and isinstance(cfg.train.lr.backbone, float)
    assert cfg.train.strategy == "ddp"
    assert cfg.generation.decoding == "greedy"
    assert cfg.template.placement == "first"


def test_version_is_optional_and_checked_against_the_size():
    assert config_from_dict({"model": {"size": "v4-tiny"}}).model.version is None
    assert config_from_dict({"model": {"size": "v5-tiny", "version": 5.2}}).model.version == "5.2"
    # a checkpoint start is not checked against the sizes table
    assert config_from_dict({"model": {"size": None, "checkpoint": "x.pth", "version": "6"}}).model.version == "6"


def test_empty_recipe_gives_defaults():
    cfg = config_from_dict({})
    assert cfg == RecipeConfig()
    assert cfg.train.lr.projector == 1e-3


@pytest.mark.parametrize(
    ("raw", "path", "listed"),
    [
        ({"train": {"lrr": 1}}, "train.lrr", "lr, weight_decay"),
        ({"trian": {}}, "trian", "model, encoders"),
        ({"train": {"lr": {"proj": 1.0}}}, "train.lr.proj", "projector, encoder, backbone"),
        ({"eval": {"report": {"thumbs": True}}}, "eval.report.thumbs", "num_examples"),
    ],
)
def test_unknown_key_names_path_and_lists_valid_keys(raw, path, listed):
    with pytest.raises(ConfigError, match=f"unknown key '{path}'") as err:
        config_from_dict(raw)
    assert listed in str(err.value)


@pytest.mark.parametrize(
    ("raw", "pieces"),
    [
        ({"train": {"batch_size": "eight"}}, ["train.batch_size", "expected int", "'eight'"]),
        ({"train": {"batch_size": True}}, ["train.batch_size", "expected int", "True"]),
        ({"train": {"cosine": "yes please"}}, ["train.cosine", "expected bool"]),
        ({"train": {"lr": {"encoder": "fast"}}}, ["train.lr.encoder", "expected float", "'fast'"]),
        ({"eval": {"metrics": "bleu"}}, ["eval.metrics", "expected a list"]),
        ({"data": {"sizes": {"train": 1.5}}}, ["data.sizes.train", "expected int", "1.5"]),
        ({"train": "fast"}, ["train", "expected a mapping"]),
    ],
)
def test_wrong_type_names_field_expected_type_and_value(raw, pieces):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    for piece in pieces:
        assert piece in str(err.value)


@pytest.mark.parametrize(
    ("raw", "pieces"),
    [
        ({"train": {"precision": "fp8"}}, ["train.precision", "'fp8'", "bf16-mixed"]),
        ({"train": {"strategy": "horovod"}}, ["train.strategy", "deepspeed", "fsdp"]),
        ({"trainable": {"encoder": "thawed"}}, ["trainable.encoder", "frozen, full, lora"]),
        ({"data": {"kind": "imagenet"}}, ["data.kind", "easy_vqa", "vqav2"]),
        ({"model": {"version": 8}}, ["model.version", "'8'", "5.2"]),
        ({"model": {"size": "v9-huge"}}, ["model.size", "'v9-huge'", "v7-tiny"]),
        ({"model": {"version": 4, "size": "v7-tiny"}}, ["model.version", "'4'", "v7-tiny", "version '7'"]),
        ({"eval": {"metrics": ["bleu", "bert"]}}, ["eval.metrics[1]", "'bert'", "cider"]),
        ({"template": {"placement": "middle"}}, ["template.placement", "sandwich"]),
        ({"train": {"wkv_backend": "tritonn"}}, ["train.wkv_backend", "chunked"]),
        ({"projector": {"image": "mlp_relu"}}, ["projector.image.kind", "mlp<N>x_gelu"]),
        ({"projector": {"image": {"kind": "linear", "reduction": "maxpool:2"}}}, ["projector.image.reduction"]),
        ({"encoders": {"video": {"name": "x"}}}, ["encoders", "'video'", "image, audio"]),
        ({"encoders": {"image": {"arch": "ViT-B-32"}}}, ["encoders.image", "'name'"]),
        ({"model": {"tokenizer": "gpt2"}}, ["model.tokenizer", "'gpt2'", "tokenizer.json"]),
        ({"model": {"size": None}}, ["model", "checkpoint"]),
        ({"train": {"devices": "all"}}, ["train.devices", "'auto'"]),
        ({"train": {"batch_size": 0}}, ["train.batch_size", ">= 1"]),
        ({"generation": {"top_p": 0}}, ["generation.top_p", "(0, 1]"]),
        ({"generation": {"temperature": -1}}, ["generation.temperature", ">= 0"]),
    ],
)
def test_bad_values_list_valid_choices(raw, pieces):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    for piece in pieces:
        assert piece in str(err.value)


def test_encoder_swap_is_one_line():
    renamed = config_from_dict({"encoders": {"image": {"name": "tiny"}}}, ["encoders.image.name=open_clip"])
    assert renamed.encoders["image"].name == "open_clip"
    assert config_from_dict({"encoders": {"audio": "tiny_audio"}}).encoders["audio"] == EncoderSpec("tiny_audio")
    swapped = config_from_dict(RECIPE, ["encoders.image={name: torchvision, arch: resnet18}"])
    assert swapped.encoders["image"] == EncoderSpec("torchvision", {"arch": "resnet18"})


def test_overrides_are_yaml_parsed_and_applied_before_validation():
    cfg = config_from_dict(
        RECIPE, ["train.lr.projector=3e-4", "train.max_steps=null", "eval.metrics=[bleu, cider]", "data.seed=7"]
    )
    assert cfg.train.lr.projector == pytest.approx(3e-4)
    assert cfg.train.max_steps is None
    assert cfg.eval.metrics == ["bleu", "cider"]
    assert cfg.data.seed == 7
    assert RECIPE["data"]["seed"] == 3, "overrides must not mutate the caller's mapping"


@pytest.mark.parametrize(
    ("override", "pieces"),
    [
        ("train.lrr=1", ["unknown key 'train.lrr'", "valid keys"]),
        ("train.batch_size=big", ["train.batch_size", "expected int"]),
        ("train.batch_size", ["a.b.c=value"]),
        ("train..lr=1", ["a.b.c=value"]),
        ("train.lr.projector.x=1", ["not a section"]),
    ],
)
def test_bad_overrides_raise_naming_the_path(override, pieces):
    with pytest.raises(ConfigError) as err:
        config_from_dict(RECIPE, [override])
    for piece in pieces:
        assert piece in str(err.value)


def test_apply_overrides_creates_missing_sections():
    assert apply_overrides({}, ["train.lr.backbone=0.5"]) == {"train": {"lr": {"backbone": 0.5}}}


def test_save_then_load_round_trips(tmp_path):
    cfg = config_from_dict(RECIPE, ["train.output_dir=out/x"])
    path = save_config(cfg, tmp_path / "ckpt" / "config.yaml")
    assert load_config(path) == cfg
    saved = yaml.safe_load(path.read_text())
    # the saved file is the resolved config: every section present, flat encoder spec
    assert set(saved) == set(config_to_dict(RecipeConfig()))
    assert saved["encoders"]["image"] == {"name": "open_clip", "arch": "ViT-B-32", "pretrained": None}


def test_load_config_reports_file_and_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: unknown key 'train\.epochz'"):
        load_config(path)
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_expand_stages_chains_checkpoints_and_applies_overrides():
    raw = dict(RECIPE)
    raw["train"] = {"output_dir": "runs/llava", "init_from": "base.pth"}
    raw["stages"] = [
        {"name": "align", "trainable": {"projector": "full", "backbone": "frozen"}, "train": {"max_steps": 5}},
        {"name": "finetune", "trainable.backbone": "lora", "train": {"lr": {"backbone": 2e-5}}},
    ]
    align, finetune = expand_stages(config_from_dict(raw))
    assert align.train.stage == "align" and finetune.train.stage == "finetune"
    assert align.train.init_from == "base.pth"
    assert align.train.output_dir == "runs/llava/align"
    assert finetune.train.init_from == "runs/llava/align/final"
    assert str(align.train.final_checkpoint) == "runs/llava/align/final"
    assert align.trainable.backbone == "frozen" and finetune.trainable.backbone == "lora"
    assert align.train.max_steps == 5 and finetune.train.max_steps is None
    assert finetune.train.lr.backbone == 2e-5 and finetune.train.lr.projector == 1e-3
    assert align.stages == [] and finetune.stages == []


def test_stage_settings_win_over_the_chain():
    raw = {
        "train": {"output_dir": "runs/x"},
        "stages": [
            {"name": "a"},
            {"name": "b", "train.init_from": "other.pth", "train": {"output_dir": "elsewhere"}},
        ],
    }
    _, b = expand_stages(config_from_dict(raw))
    assert b.train.init_from == "other.pth" and b.train.output_dir == "elsewhere"


def test_recipe_without_stages_expands_to_itself():
    cfg = config_from_dict(RECIPE)
    assert expand_stages(cfg) == [cfg]


def test_bad_stage_is_caught_at_load_time():
    with pytest.raises(ConfigError, match=r"stages\[1\] \(finetune\).*trainable\.backbone"):
        config_from_dict({"stages": [{"name": "align"}, {"name": "finetune", "trainable": {"backbone": "half"}}]})
    with pytest.raises(ConfigError, match=r"stages\[0\].*'name'"):
        config_from_dict({"stages": [{"train": {"max_steps": 1}}]})


def test_generation_decoding_label():
    assert config_from_dict({"generation": {"temperature": 0.0}}).generation.decoding == "greedy"
    assert "top_p 0.5" in config_from_dict({"generation": {"top_p": 0.5}}).generation.decoding


def test_generation_section_builds_the_generators_sampling_config():
    cfg = config_from_dict({"generation": {"top_k": 1, "max_tokens": 5, "stop": ["\n"], "seed": 3}})
    sampling = cfg.generation.to_sampling()
    assert type(sampling).__name__ == "SamplingConfig"
    assert (sampling.top_k, sampling.max_tokens, sampling.stop, sampling.seed) == (1, 5, ["\n"], 3)
    assert config_from_dict({}).generation.to_sampling().top_p == 1.0
