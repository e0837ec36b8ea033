"""A LoRA-trained recipe: the next stage, `mmrwkv eval`, `mmrwkv generate` and the demo all load its checkpoints,
with the logits of the trained model; a recipe without a `generation` section evaluates with the defaults."""

from pathlib import Path

import torch
import yaml

from mmrwkv.config import config_from_dict, expand_stages
from mmrwkv.evaluation.predict import eval_samples, evaluate_recipe, predict
from mmrwkv.lora import lora_layers
from mmrwkv.multimodal import Media, MultimodalRWKV
from mmrwkv.training.build import build_model
from mmrwkv.training.checkpoints import last_checkpoint
from mmrwkv.training.train import train_recipe

ROOT = Path(__file__).resolve().parents[2]


def _lora_recipe(out, tiny):
    raw = yaml.safe_load((ROOT / "recipes" / "easy_vqa.yaml").read_text())
    raw.pop("generation")
    raw["stages"] = [{"name": "adapt"}, {"name": "tune", "train": {"lr": {"backbone": 1e-3}}}]
    lora = {"trainable.backbone": "lora", "trainable.lora_rank": 4, "trainable.lora_alpha": 8, "train.max_steps": 3}
    overrides = [o for o in tiny(out, **lora) if not o.startswith("stages=")]  # keep this test's own stages
    return config_from_dict(raw, overrides, source="easy_vqa without generation")


def _trained_in_memory(stage_cfg):
    """The model exactly as training left it: built as the stage builds it, with the last trainer state."""
    model = build_model(stage_cfg)
    state = torch.load(last_checkpoint(Path(stage_cfg.train.output_dir) / "checkpoints") / "trainer.ckpt",
                       map_location="cpu", weights_only=False)["state_dict"]
    # the module also holds training-only parts (the bag-of-words heads): take the model's weights
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    assert lora_layers(model.backbone) and any(layer.lora_B.abs().sum() > 0 for layer in lora_layers(model).values())
    return model.eval()


def test_lora_stages_chain_and_every_tool_loads_the_result(tmp_path, tiny):
    cfg = _lora_recipe(tmp_path / "run", tiny)
    results = train_recipe(cfg, progress=False)
    assert [r.steps for r in results] == [3, 3]
    last_cfg = expand_stages(cfg)[-1]
    final = results[-1].final

    trained = _trained_in_memory(last_cfg)
    loaded = MultimodalRWKV.load(final).eval()
    sample = eval_samples(last_cfg)[0]
    image = loaded.preprocess("image", sample.images[0])
    ids = torch.tensor([[5, *[loaded.placeholder_ids["image"]] * loaded.tokens_per_item("image", image), 7, 9]])
    media = Media({"image": [image]})
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, media)[0], trained(ids, media)[0], rtol=1e-5, atol=1e-5)

    report = evaluate_recipe(last_cfg, final, out_dir=tmp_path / "eval", progress=False)
    assert report.metrics["num_samples"] == 12 and "exact_match" in report.metrics["metrics"]

    from mmrwkv.inference.generate import SamplingConfig
    from mmrwkv.inference.session import answer_once

    answer = "".join(answer_once(str(final), "what shape is it?", images=[sample.images[0]],
                                 sampling=SamplingConfig(temperature=0.0, max_tokens=4)))
    assert isinstance(answer, str)

    from mmrwkv.demos.common import ModelRegistry

    _, demo_model = ModelRegistry().get(str(final))
    with torch.no_grad():
        torch.testing.assert_close(demo_model(ids, media)[0], loaded(ids, media)[0])


def test_eval_never_decodes_a_media_placeholder(tmp_path, tiny):
    cfg = expand_stages(_lora_recipe(tmp_path / "run", tiny))[0]
    model = build_model(cfg).eval()
    pid = model.placeholder_ids["image"]
    real_forward = model.backbone.forward

    def wants_the_placeholder(*args, **kwargs):
        logits, state = real_forward(*args, **kwargs)
        return logits.index_fill(-1, torch.tensor([pid]), 1e4), state

    # a model that most wants to emit the image placeholder: greedy and sampled decoding must skip it
    model.backbone.forward = wants_the_placeholder
    samples = eval_samples(cfg)[:4]
    for generation in ({"temperature": 0.0}, {}):
        cfg.generation = config_from_dict({"generation": {**generation, "max_tokens": 3}}).generation
        assert set(predict(model, samples, cfg)) == {s.id for s in samples}
