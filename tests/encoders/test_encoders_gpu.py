"""Encoders and projectors run on CUDA and agree with their CPU results (skipped without a GPU)."""

import pytest
import torch

from mmrwkv.encoders import build
from mmrwkv.encoders.projector import build_projector


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("tiny_cnn", {"image_size": 32, "width": 8, "grid": 4}),
        ("tiny_vit", {"image_size": 32, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}),
        ("torchvision", {"arch": "resnet18", "image_size": 32}),
    ],
)
def test_image_encoders_match_cpu_on_cuda(name, kwargs):
    enc = build(name, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cpu = enc(x)
        gpu = enc.cuda()(x.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
def test_tiny_whisper_padded_batch_on_cuda():
    enc = build("tiny_whisper", width=16, depth=1, heads=2).eval()
    items = [enc.preprocess((torch.randn(n), 16000)) for n in (3200, 1600)]
    batch = enc.collate(items)
    proj = build_projector("mlp2x_gelu", 16, 8, reduction="avgpool:2").eval()
    with torch.no_grad():
        cpu = proj(enc(batch))
        gpu = proj.cuda()(enc.cuda()(batch.cuda())).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-3, rtol=1e-3)
