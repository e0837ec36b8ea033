"""The full-scale GPU recipes as shipped, on tiny data in the public formats (LLaVA JSON, Karpathy's COCO split,
VQAv2): only data roots, model sizes and step counts are overridden, so their stages, data sections, token
limits, precision (bf16-mixed) and settings run as a user runs them; and their real shapes (ViT-L-14-336 + RWKV-7
1.5B) built on the meta device, to check that every size adds up."""

import functools
from pathlib import Path

import pytest
import torch
import yaml

from mmrwkv.config import config_from_dict, expand_stages, load_config
from mmrwkv.data.public_formats import write_clotho, write_karpathy, write_llava, write_vqav2
from mmrwkv.training.train_and_evaluate import run_recipe

ROOT = Path(__file__).resolve().parents[2]
GPU_RECIPES = ["coco_caption_v7", "llava_v7"]
# Java-based metrics: left to the real runs
SLOW_METRICS = {"meteor", "spice"}


def _tiny_checkpoint(path: Path) -> str:
    """A random RWKV-7 with the World vocabulary (the recipes' tokenizer), one narrow layer."""
    from mmrwkv.checkpoint import save_rwkv
    from mmrwkv.rwkv import RWKV, config_for

    torch.manual_seed(0)
    save_rwkv(RWKV(config_for("v7-tiny", n_layer=1, n_embd=32, head_size=16, vocab_size=65536)), path)
    return str(path)


def _as_shipped(name: str, tmp: Path) -> dict:
    raw = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    raw["model"]["checkpoint"] = _tiny_checkpoint(tmp / "backbone")
    # the encoder's size only: its preprocessing settings (resize) stay
    image = raw["encoders"]["image"]
    raw["encoders"]["image"] = {
        "name": "tiny_cnn",
        "image_size": 16,
        "width": 8,
        "grid": 2,
        **({"resize": image["resize"]} if "resize" in image else {}),
    }
    raw["train"].update(
        {"output_dir": str(tmp / "run"), "strategy": "auto", "num_workers": 0, "log_every": 1, "checkpoint_every": 0}
    )
    for stage in raw["stages"]:
        stage["train"].update({"max_steps": 2, "batch_size": 2, "global_batch_size": 2})
    raw["eval"].update(
        {
            "max_samples": 4,
            "val_max_samples": 4,
            "batch_size": 4,
            "metrics": [m for m in raw["eval"]["metrics"] if m not in SLOW_METRICS],
            "report": {"thumbnails": True},
        }
    )
    raw["generation"]["max_tokens"] = 6
    return raw


def _data(name: str, raw: dict, tmp: Path) -> None:
    if name == "llava_v7":
        write_llava(tmp / "llava", 6, size=40, text_only=1, long_records=1)
        raw["data"]["root"] = str(tmp / "llava")
        write_vqav2(tmp / "coco", "train", 4, size=40)
        write_vqav2(tmp / "coco", "val", 3, size=40, seed=1)
        raw["stages"][-1]["data"]["root"] = str(tmp / "coco")
    else:
        write_karpathy(tmp / "coco", 16, size=40)
        raw["data"]["root"] = str(tmp / "coco")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipe_runs_as_shipped_on_tiny_data_in_the_public_formats(name, tmp_path, capsys):
    raw = _as_shipped(name, tmp_path)
    _data(name, raw, tmp_path)
    cfg = config_from_dict(raw, source=name)
    report = run_recipe(cfg, progress=False)
    for stage in expand_stages(cfg):
        assert (Path(stage.train.output_dir) / "final" / "model.safetensors").is_file()
        assert stage.train.precision == "bf16-mixed"
    assert report.metrics["num_samples"] == 4 and report.paths["report"].is_file()
    said = capsys.readouterr().out
    if name == "llava_v7":
        # the ~2,300-token LLaVA-665K record is cut at 2048 (or skipped), never a crash
        assert report.metrics["metrics"]["vqa_accuracy"] >= 0
    else:
        assert any(k.startswith("CIDEr") for k in report.metrics["metrics"])
        assert (tmp_path / "run" / "finetune" / "best").is_dir()  # best_metric val/CIDEr-D
    assert "WKV backend chunked" in said


def test_audio_caption_recipe_trains_on_clotho_files_with_one_to_five_captions(tmp_path):
    raw = yaml.safe_load((ROOT / "recipes" / "audio_caption.yaml").read_text())
    for split, n in (("development", 8), ("evaluation", 3)):
        write_clotho(tmp_path / "clotho", split, n)
    raw["data"] = {
        "kind": "clotho",
        "root": str(tmp_path / "clotho"),
        "train_split": "development",
        "val_split": "evaluation",
        "paths": {s: {"csv": f"clotho_captions_{s}.csv", "audio": s} for s in ("development", "evaluation")},
    }
    raw["model"]["overrides"] = {"n_layer": 1, "n_embd": 32, "head_size": 16}
    raw["model"]["bpe_vocab_size"] = 300
    raw["encoders"]["audio"].update({"width": 16, "depth": 1, "heads": 2})
    raw["train"].update({"output_dir": str(tmp_path / "run"), "batch_size": 4, "log_every": 1, "checkpoint_every": 0})
    raw["stages"] = [
        {"name": s["name"], "train": {**s.get("train", {}), "max_steps": 2, "batch_size": 4}} for s in raw["stages"]
    ]
    raw["eval"].update({"split": "evaluation", "max_samples": 3, "val_max_samples": 3, "batch_size": 4})
    raw["generation"]["max_tokens"] = 6
    report = run_recipe(config_from_dict(raw, source="audio_caption"), progress=False)
    assert report.metrics["num_samples"] == 3 and "CIDEr-D" in report.metrics["metrics"]


def _meta_model(cfg, monkeypatch):
    import open_clip

    from mmrwkv.encoders.weights import weights_from_checkpoint
    from mmrwkv.multimodal import MultimodalRWKV
    from mmrwkv.training.build import model_config

    # open_clip moves its model to a device: the meta device, so nothing is allocated or initialised
    monkeypatch.setattr(open_clip, "create_model", functools.partial(open_clip.create_model, device="meta"))
    # the official 1.5B checkpoint's shapes (model.checkpoint is not read)
    with torch.device("meta"), weights_from_checkpoint():
        return MultimodalRWKV.from_config(model_config(cfg, "world", 65536, backbone={"size": "v7-1.5b"}))


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipe_real_shapes_add_up(name, tmp_path, monkeypatch):
    from PIL import Image

    from mmrwkv.data.sample import Sample
    from mmrwkv.data.template import ChatTemplate
    from mmrwkv.training.build import to_turns
    from mmrwkv.training.lengths import MediaCache

    stages = expand_stages(load_config(ROOT / "recipes" / f"{name}.yaml"))
    model = _meta_model(stages[-1], monkeypatch)
    encoder = model.encoders["image"]
    assert encoder.tokens_per_image == 576 and encoder.image_preprocess.size == (336, 336)
    assert encoder.out_dim == 1024 and model.backbone.config.n_embd == 2048
    assert model.projectors["image"](torch.zeros(1, 576, 1024, device="meta")).shape == (1, 576, 2048)
    image = tmp_path / "wide.jpg"
    Image.new("RGB", (640, 360), (90, 120, 30)).save(image)
    template = ChatTemplate(model.tokenizer, stages[-1].template.placement, model=MediaCache(model))
    # the longest sample each stage is meant to hold whole: a long COCO caption, a LLaVA-558K caption, a VQA turn
    long_text = " ".join(["a man riding a wave on top of a surfboard in the ocean"] * 5)
    samples = [
        Sample(id="c", images=[image], captions=[long_text]),
        Sample(id="q", images=[image], question="What is the man riding?", answers=["surfboard"] * 10),
    ]
    for stage in stages:
        for sample in samples:
            n = len(template.encode_turns(to_turns(sample), train=True).ids)
            assert 576 < n <= stage.data.max_text_tokens, (stage.train.stage, sample.id, n)
