"""set_trainable on encoders and projectors: frozen / full / lora per part."""

import torch

from mmrwkv.encoders import build, set_trainable
from mmrwkv.encoders.projector import build_projector


def _trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_frozen_encoder_gets_no_gradients_while_projector_trains():
    enc = set_trainable(build("tiny_vit", image_size=16, patch_size=8, width=16, depth=1, heads=2), "frozen")
    proj = set_trainable(build_projector("mlp2x_gelu", enc.out_dim, 8), "full")
    proj(enc(torch.randn(2, 3, 16, 16))).sum().backward()
    assert all(p.grad is None for p in enc.parameters())
    assert all(p.grad is not None for p in proj.parameters())


def test_lora_on_an_encoder_adapts_only_its_linear_layers():
    enc = build("tiny_vit", image_size=16, patch_size=8, width=16, depth=1, heads=2).eval()
    x = torch.randn(1, 3, 16, 16)
    before = enc(x)
    set_trainable(enc, "lora", rank=2, targets=["linear1", "linear2"])
    names = _trainable(enc)
    assert names == {f"blocks.layers.0.{lin}.{ab}" for lin in ("linear1", "linear2") for ab in ("lora_A", "lora_B")}
    assert torch.allclose(enc(x), before)


def test_trained_lora_changes_inference_outputs_of_transformer_encoders():
    # PyTorch's fused transformer inference path would skip adapters; the tiny encoders keep it off
    for enc, x in (
        (build("tiny_vit", image_size=16, patch_size=8, width=16, depth=1, heads=2), torch.randn(1, 3, 16, 16)),
        (build("tiny_whisper", width=16, depth=1, heads=2), torch.randn(1, 80, 20)),
    ):
        enc.eval()
        with torch.no_grad():
            before = enc(x)
            set_trainable(enc, "lora", rank=2, targets=["linear1"])
            for layer in enc.modules():
                if hasattr(layer, "lora_B"):
                    layer.lora_B.fill_(0.5)
            assert not torch.allclose(enc(x), before, atol=1e-4)


def test_frozen_encoder_stays_in_eval_mode_so_batchnorm_stats_do_not_drift():
    enc = set_trainable(build("torchvision", arch="mobilenet_v3_small", image_size=32), "frozen")
    parent = torch.nn.ModuleDict({"enc": enc}).train()
    assert not enc.training
    stats = {k: v.clone() for k, v in enc.state_dict().items() if "running_mean" in k}
    enc(torch.randn(2, 3, 32, 32) * 5)
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in stats.items())
    set_trainable(enc, "full")
    parent.train()
    assert enc.training
