"""Image encoders: preprocessing constants, token counts that match forward, batch consistency, weights files."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmrwkv.encoders import ImagePreprocess, build
from mmrwkv.errors import CheckpointError, ConfigError, MediaError


def _image(w=40, h=30, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_preprocess_shortest_resizes_then_center_crops_and_normalizes():
    pp = ImagePreprocess((8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", "shortest")
    img = Image.new("RGB", (32, 16), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 4, 16))  # a blue strip at the left edge is cropped away
    out = pp(img)
    assert out.shape == (3, 8, 8)
    assert torch.allclose(out[0], torch.full((8, 8), 2.0)) and torch.allclose(out[2], torch.full((8, 8), -2.0))


def test_preprocess_squash_keeps_the_whole_image():
    pp = ImagePreprocess((4, 4), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear", "squash")
    img = Image.new("RGB", (32, 16), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 16, 16))
    out = pp(img)
    assert out[2, :, 0].min() > 0.9 and out[0, :, -1].min() > 0.9


@pytest.mark.parametrize(
    ("name", "kwargs", "n_tokens", "dim"),
    [
        ("tiny_cnn", {"image_size": 32, "width": 16, "grid": 4}, 16, 16),
        ("tiny_cnn", {"image_size": 64, "width": 8, "grid": 2}, 4, 8),
        ("tiny_vit", {"image_size": 32, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}, 16, 16),
        ("tiny_vit", {"image_size": 32, "patch_size": 16, "width": 16, "cls_token": True}, 5, 16),
    ],
)
def test_tiny_encoders_token_count_matches_forward(name, kwargs, n_tokens, dim):
    enc = build(name, **kwargs)
    items = [enc.preprocess(_image(seed=i)) for i in range(3)]
    assert items[0].shape == (3, kwargs["image_size"], kwargs["image_size"])
    out = enc(enc.collate(items))
    assert out.shape == (3, n_tokens, dim) == (3, enc.num_tokens(items[0]), enc.out_dim)
    assert torch.isfinite(out).all()


def test_batched_equals_one_at_a_time():
    enc = build("tiny_vit", image_size=32, patch_size=8, width=16, depth=1, heads=2).eval()
    items = [enc.preprocess(_image(seed=i)) for i in range(2)]
    both = enc(enc.collate(items))
    assert torch.allclose(both[1], enc(enc.collate(items[1:]))[0], atol=1e-5)


def test_tiny_encoders_learn(tmp_path):
    # gradients reach the first layer: the encoder is trainable from scratch
    enc = build("tiny_cnn", image_size=32, width=8, grid=4)
    enc(torch.randn(2, 3, 32, 32)).pow(2).mean().backward()
    assert enc.body[0].weight.grad.abs().sum() > 0


def test_bad_tiny_configs_raise():
    with pytest.raises(ConfigError, match="grid 3"):
        build("tiny_cnn", image_size=32, grid=3)
    with pytest.raises(ConfigError, match="patch_size 7"):
        build("tiny_vit", image_size=32, patch_size=7)


def test_collate_refuses_mismatched_items():
    enc = build("tiny_cnn", image_size=32, width=8, grid=4)
    with pytest.raises(MediaError, match=r"item 1.*expected \(3, 32, 32\)"):
        enc.collate([torch.zeros(3, 32, 32), torch.zeros(3, 16, 16)])


def test_preprocess_accepts_path_bytes_and_pil(tmp_path):
    enc = build("tiny_cnn", image_size=32, width=8, grid=4)
    path = tmp_path / "a.png"
    _image().save(path)
    outs = [enc.preprocess(src) for src in (path, path.read_bytes(), _image())]
    assert all(torch.equal(outs[0], o) for o in outs)


def test_preprocess_applies_the_pixel_limit():
    enc = build("tiny_cnn", image_size=32, width=8, grid=4, max_pixels=100)
    with pytest.raises(MediaError, match="over the limit"):
        enc.preprocess(_image(20, 20))


@pytest.mark.parametrize(
    ("arch", "n_tokens", "dim"),
    [
        ("resnet18", 4, 512),
        ("mobilenet_v3_small", 4, 576),
        ("efficientnet_b0", 4, 1280),
        pytest.param("convnext_tiny", 4, 768, marks=pytest.mark.slow),
        pytest.param("resnet50", 4, 2048, marks=pytest.mark.slow),
    ],
)
def test_torchvision_cnn_feature_map_becomes_tokens(arch, n_tokens, dim):
    enc = build("torchvision", arch=arch, image_size=64).eval()
    assert enc.image_preprocess.mean == (0.485, 0.456, 0.406)
    out = enc(enc.collate([enc.preprocess(_image())]))
    assert out.shape == (1, n_tokens, dim) and enc.num_tokens(None) == n_tokens and enc.out_dim == dim
    import torchvision

    # the classifier head is dropped
    full = sum(p.numel() for p in torchvision.models.get_model(arch).parameters())
    assert sum(p.numel() for p in enc.parameters()) < full


def test_torchvision_local_weights_file_is_loaded(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = build("torchvision", arch="resnet18", image_size=32, weights=str(path)).eval()
    ref.eval()
    x = torch.randn(1, 3, 32, 32)
    trunk = torch.nn.Sequential(*list(ref.children())[:-2])
    assert torch.allclose(enc(x), trunk(x).flatten(2).transpose(1, 2), atol=1e-5)


def test_torchvision_bad_inputs_raise(tmp_path):
    with pytest.raises(ConfigError, match="unknown arch 'resnet7'.*resnet18"):
        build("torchvision", arch="resnet7")
    with pytest.raises(ConfigError, match="not in the local cache.*weights="):
        build("torchvision", arch="resnet18", pretrained="IMAGENET1K_V1", image_size=32)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*missing keys"):
        build("torchvision", arch="resnet18", weights=str(bad), image_size=32)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth.*cannot be read"):
        build("torchvision", arch="resnet18", weights=str(junk), image_size=32)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "cls", "n_tokens"), [("vit_b_16", False, 4), ("vit_b_16", True, 5), ("swin_t", False, 16)]
)
def test_torchvision_transformers_give_tokens(arch, cls, n_tokens):
    enc = build("torchvision", arch=arch, image_size=32 if arch.startswith("vit") else 128, cls_token=cls).eval()
    out = enc(torch.randn(1, 3, *enc.image_preprocess.size))
    assert out.shape == (1, n_tokens, 768) and enc.tokens_per_image == n_tokens
