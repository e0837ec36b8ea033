"""Every built-in encoder's state saves with safetensors and reloads into a fresh build with the same outputs."""

import pytest
import torch
from safetensors.torch import load_model, save_model

from mmrwkv.encoders import build

CASES = [
    ("tiny_cnn", {"image_size": 32, "width": 8, "grid": 4}, (1, 3, 32, 32)),
    ("tiny_vit", {"image_size": 32, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}, (1, 3, 32, 32)),
    ("tiny_whisper", {"width": 16, "depth": 1, "heads": 2}, (1, 80, 40)),
    ("torchvision", {"arch": "mobilenet_v3_small", "image_size": 32}, (1, 3, 32, 32)),
    (
        "open_clip",
        {
            "arch": "ViT-S-32",
            "model_overrides": {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
                "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
            },
        },
        (1, 3, 32, 32),
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES, ids=[c[0] for c in CASES])
def test_state_round_trips_through_safetensors(tmp_path, name, kwargs, shape):
    enc = build(name, **kwargs).eval()
    path = tmp_path / "enc.safetensors"
    save_model(enc, str(path))
    torch.manual_seed(123)
    fresh = build(name, **kwargs).eval()
    load_model(fresh, str(path))
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(enc(x), fresh(x))


def test_log_mel_constants_stay_out_of_the_state_dict():
    enc = build("tiny_whisper", width=16, depth=1, heads=2)
    assert not any(k.startswith("front.") for k in enc.state_dict())
