"""open_clip encoder on a tiny random arch: weights file round trip, layer choice, CLS, preprocessing, offline tags."""

import pytest
import torch

from mmrwkv.encoders import build
from mmrwkv.errors import CheckpointError, ConfigError

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None, load_weights=False, **TINY).eval()
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return path, model


def _reference_tokens(model, pixels, block):
    """Patch tokens after `block` computed straight from the open_clip modules."""
    v = model.visual
    x = v.conv1(pixels).flatten(2).transpose(1, 2)  # (B, N, D)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(x)
    for blk in v.transformer.resblocks[: block + 1]:
        x = blk(x)
    return x


def test_weights_file_loads_and_penultimate_layer_is_default(clip_file):
    path, model = clip_file
    enc = build("open_clip", arch="ViT-S-32", weights=str(path), model_overrides=TINY).eval()
    assert (enc.out_dim, enc.tokens_per_image, enc.layer) == (32, 16, 1)
    assert len(enc.visual.transformer.resblocks) == 2  # the last block is pruned
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out, ref = enc(pixels), _reference_tokens(model, pixels, 1)
    assert out.shape == (2, 16, 32)
    assert torch.allclose(out, ref[:, 1:], atol=1e-5)


def test_cls_token_and_explicit_layer(clip_file):
    path, model = clip_file
    enc = build("open_clip", arch="ViT-S-32", weights=str(path), model_overrides=TINY, layer=0, cls_token=True)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out, ref = enc.eval()(pixels), _reference_tokens(model, pixels, 0)
    assert out.shape == (1, 17, 32) and enc.num_tokens(pixels[0]) == 17
    assert torch.allclose(out, ref, atol=1e-5)


def test_visual_only_state_dict_is_accepted(clip_file, tmp_path):
    path, model = clip_file
    visual_path = tmp_path / "visual.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.visual.state_dict().items()}, visual_path)
    enc = build("open_clip", arch="ViT-S-32", weights=str(visual_path), model_overrides=TINY).eval()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc(pixels), _reference_tokens(model, pixels, 1)[:, 1:], atol=1e-5)


def test_preprocessing_constants_come_from_open_clip():
    enc = build("open_clip", arch="ViT-S-32", model_overrides=TINY)
    pp = enc.image_preprocess
    assert pp.size == (32, 32) and pp.interpolation == "bicubic" and pp.resize_mode == "shortest"
    assert pp.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    from PIL import Image

    assert enc.preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)


def test_pretrained_tag_not_cached_explains_how_to_pass_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"not in the local cache.*pass weights=") as err:
        build("open_clip", arch="ViT-B-32", pretrained="laion2b_s34b_b79k")
    # a URL to fetch from, and the recipe key to pass the file with
    assert "(https://huggingface.co/" in str(err.value) and "encoders.image.weights=PATH" in str(err.value)


def test_bad_arch_tag_layer_and_file(clip_file, tmp_path):
    path, _ = clip_file
    with pytest.raises(ConfigError, match="unknown arch 'ViT-Q-99'.*ViT-B-32"):
        build("open_clip", arch="ViT-Q-99")
    with pytest.raises(ConfigError, match="unknown pretrained tag 'nope'.*openai"):
        build("open_clip", arch="ViT-B-32", pretrained="nope")
    with pytest.raises(ConfigError, match="layer 5 is out of range"):
        build("open_clip", arch="ViT-S-32", model_overrides=TINY, layer=5)
    with pytest.raises(CheckpointError, match="does not fit"):
        build("open_clip", arch="ViT-S-32", weights=str(path), model_overrides={**TINY, "embed_dim": 8})


def test_pretrained_tag_uses_a_locally_cached_file(clip_file, monkeypatch, tmp_path):
    path, model = clip_file
    # open_clip's URL cache for the "openai" tag is ~/.cache/clip/<file name of the URL>
    cache = tmp_path / ".cache" / "clip"
    cache.mkdir(parents=True)
    (cache / "ViT-B-32.pt").write_bytes(path.read_bytes())
    monkeypatch.setenv("HOME", str(tmp_path))
    enc = build("open_clip", arch="ViT-B-32", pretrained="openai", model_overrides=TINY).eval()
    assert torch.equal(enc.visual.conv1.weight, model.visual.conv1.weight)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_archive_like_openai_files_is_read(clip_file, tmp_path):
    _, model = clip_file

    class Wrapper(torch.nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return self.visual(x)

    path = tmp_path / "jit.pt"
    torch.jit.trace(Wrapper(model.visual), torch.randn(1, 3, 32, 32), check_trace=False).save(str(path))
    enc = build("open_clip", arch="ViT-S-32", weights=str(path), model_overrides=TINY)
    assert torch.equal(enc.visual.conv1.weight, model.visual.conv1.weight)


def test_modified_resnet_tower_gives_stage_feature_maps_as_tokens():
    overrides = {**TINY, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8}}
    last = build("open_clip", arch="RN50", model_overrides=overrides, layer=-1)
    assert (last.layer, last.tokens_per_image, last.out_dim) == (4, 4, 256)
    assert last(torch.randn(2, 3, 64, 64)).shape == (2, 4, 256)
    third = build("open_clip", arch="RN50", model_overrides=overrides)
    assert (third.layer, third.tokens_per_image, third.out_dim) == (3, 16, 128)
    assert isinstance(third.visual.layer4, torch.nn.Identity)
    with pytest.raises(ConfigError, match="cls_token=True needs a ViT tower"):
        build("open_clip", arch="RN50", model_overrides=overrides, cls_token=True)


@pytest.mark.slow
def test_timm_tower_uses_block_indices_and_is_pruned():
    vision = {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False, "image_size": 224}
    enc = build("open_clip", arch="ViT-B-16-SigLIP", model_overrides={**TINY, "vision_cfg": vision})
    assert (enc.layer, enc.out_dim, enc.tokens_per_image) == (10, 192, 196)
    assert len(enc.visual.trunk.blocks) == 11
    assert enc(torch.randn(1, 3, 224, 224)).shape == (1, 196, 192)
