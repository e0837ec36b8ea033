"""`hf_vision`: transformers' CLIP / SigLIP vision towers from a local directory (tiny random towers saved in the
test): features equal transformers' own forward (hidden state -2, as LLaVA takes), preprocessing equals the saved
image processor's, the token count is known from config.json before any weights load, bad directories are named."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from mmrwkv.encoders import build  # noqa: E402
from mmrwkv.errors import CheckpointError, ConfigError  # noqa: E402
from mmrwkv.recipe_catalog import encoder_tokens  # noqa: E402

TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def _save(tmp_path, family: str, *, whole: bool = False):
    torch.manual_seed(0)
    if family == "clip":
        vision = transformers.CLIPVisionConfig(**TOWER)
        processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        if whole:
            text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
            model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision.to_dict()))
        else:
            model = transformers.CLIPVisionModel(vision)
    else:
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TOWER))
        processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    directory = tmp_path / family
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory, model, processor


def _image(size=(32, 32)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


@pytest.mark.parametrize(("family", "whole"), [("clip", False), ("clip", True), ("siglip", False)])
def test_features_equal_transformers_forward(tmp_path, family, whole):
    directory, model, processor = _save(tmp_path, family, whole=whole)
    encoder = build("hf_vision", path=str(directory), layer=-2).eval()
    image = _image((48, 40))
    pixels = encoder.preprocess(image)
    if family == "siglip":  # squash resize of a non-square image: PIL's bicubic rounds a few pixels one level apart
        reference = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert (pixels - reference).abs().max() <= 1 / 255 / 0.5 + 1e-5
        assert ((pixels - reference).abs() > 1e-5).float().mean() < 0.02
    square = encoder.preprocess(_image())
    assert torch.allclose(square, processor(images=_image(), return_tensors="pt")["pixel_values"][0], atol=1e-5)
    batch = encoder.collate([pixels, square])
    with torch.no_grad():
        ours = encoder(batch)
        vision = model.vision_model if whole else model
        theirs = vision(pixel_values=batch, output_hidden_states=True).hidden_states[-2]
    expected = theirs[:, 1:] if family == "clip" else theirs
    assert ours.shape == (2, 16, 32) and encoder.num_tokens(pixels) == 16 == encoder.out_dim // 2
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert len(encoder.tower.encoder.layers) == 2  # the last block is never run


def test_token_count_is_known_before_loading_and_cls_is_optional(tmp_path):
    directory, _, _ = _save(tmp_path, "clip")
    (directory / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    assert encoder_tokens("hf_vision", {"path": str(directory)}) == 16
    assert encoder_tokens("hf_vision", {"path": str(directory), "cls_token": True}) == 17
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        build("hf_vision", path=str(directory))
    (tmp_path / "elsewhere.safetensors").rename(directory / "model.safetensors")
    assert build("hf_vision", path=str(directory), cls_token=True, layer=-1).tokens_per_image == 17


def test_bad_directories_and_layers_get_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        build("hf_vision", path=str(tmp_path / "nowhere"))
    directory, _, _ = _save(tmp_path, "siglip")
    with pytest.raises(ConfigError, match="layer 4 is out of range for 3 blocks"):
        build("hf_vision", path=str(directory), layer=4)
    with pytest.raises(ConfigError, match="SigLIP has no CLS token"):
        build("hf_vision", path=str(directory), cls_token=True)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "siglip2_vision_model"}))
    with pytest.raises(CheckpointError, match="patch_embedding.weight has shape"):  # a SigLIP file as a SigLIP2
        build("hf_vision", path=str(directory))


def test_chosen_by_name_in_a_recipe(tmp_path):
    from mmrwkv.recipe_catalog import validate_recipe

    directory, _, _ = _save(tmp_path, "siglip")
    recipe = {
        "model": {"size": "v7-tiny"},
        "data": {"kind": "shapes", "max_text_tokens": 20},
        "encoders": {"image": {"name": "hf_vision", "path": str(directory), "layer": -2}},
        "projector": {"image": "mlp2x_gelu"},
    }
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    result = validate_recipe(tmp_path / "r.yaml")
    assert any("max_text_tokens: 20 is less than one image item's 16 tokens" in p for p in result.problems)
    recipe["encoders"]["image"]["path"] = str(tmp_path / "missing")
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    assert any("encoders.image.path" in p and "not found" in p for p in validate_recipe(tmp_path / "r.yaml").problems)


def test_siglip2_naflex_keeps_the_aspect_ratio_and_equals_transformers(tmp_path):
    torch.manual_seed(0)
    vision = transformers.Siglip2VisionConfig(**{k: v for k, v in TOWER.items() if k != "image_size"}, num_patches=16)
    model = transformers.Siglip2VisionModel(vision).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    processor = transformers.Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    model.save_pretrained(tmp_path / "s2")
    processor.save_pretrained(tmp_path / "s2")
    encoder = build("hf_vision", path=str(tmp_path / "s2"), layer=-2).eval()
    assert encoder_tokens("hf_vision", {"path": str(tmp_path / "s2")}) == 16  # the budget: an upper bound
    wide, tall = _image((56, 40)), _image((24, 60))
    items = [encoder.preprocess(wide), encoder.preprocess(tall)]
    reference = processor(images=[wide, tall], return_tensors="pt")
    counts = [encoder.num_tokens(t) for t in items]
    assert counts == reference["pixel_attention_mask"].sum(1).tolist() == [15, 10]  # 5x3 and 2x5 patch grids
    batch = encoder.collate(items)
    torch.testing.assert_close(batch[..., :-3], reference["pixel_values"], rtol=0, atol=1e-6)
    with torch.no_grad():
        ours = encoder(batch)
        theirs = model(
            pixel_values=reference["pixel_values"],
            pixel_attention_mask=reference["pixel_attention_mask"],
            spatial_shapes=reference["spatial_shapes"],
            output_hidden_states=True,
        ).hidden_states[-2]
    for row, n in enumerate(counts):
        torch.testing.assert_close(ours[row, :n], theirs[row, :n], rtol=1e-5, atol=1e-5)
        assert not ours[row, n:].any()
    # in a model: each image fills as many placeholders as its own grid has patches
    from mmrwkv.data.template import ChatTemplate, Turn
    from mmrwkv.multimodal import MultimodalRWKV

    mm = MultimodalRWKV.from_config(
        {
            "backbone": {"size": "v7-tiny", "n_layer": 1, "n_embd": 32, "head_size": 16, "vocab_size": 65536},
            "encoders": {"image": {"name": "hf_vision", "kwargs": {"path": str(tmp_path / "s2")}}},
            "projectors": {"image": {"kind": "linear"}},
            "placement": "first",
        }
    ).eval()
    encoded = ChatTemplate.for_model(mm).encode_turns([Turn("user", "compare", images=[wide, tall])])
    assert encoded.ids.count(mm.placeholder_ids["image"]) == 25
    with torch.no_grad():
        logits, _ = mm(torch.tensor([encoded.ids]), encoded.media)
    assert torch.isfinite(logits).all()


def test_open_clip_given_a_transformers_tower_names_hf_vision(tmp_path):
    directory, _, _ = _save(tmp_path, "siglip")
    with pytest.raises(ConfigError, match="use encoder hf_vision with path="):
        build("open_clip", arch="ViT-B-32", weights=str(directory / "model.safetensors"))
