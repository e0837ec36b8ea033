"""LoRA on the RWKV backbone's plain nn.Linear matrices, for every generation: neutral when fresh, trains, merges."""

import pytest
import torch

from mmrwkv.lora import apply_lora, lora_state_dict, mark_only_lora_trainable, merge_lora
from mmrwkv.rwkv import RWKV, config_for

SIZES = {"4": "v4-tiny", "5.2": "v5-tiny", "6": "v6-tiny", "7": "v7-tiny"}


def _tiny(version: str) -> RWKV:
    return RWKV(config_for(SIZES[version], n_layer=1)).eval()


@pytest.mark.parametrize("version", list(SIZES))
def test_lora_on_backbone_is_neutral_then_trains_then_merges(version):
    # the reference WKV backend keeps this test about LoRA, independent of the fast kernels
    model = _tiny(version)
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    with torch.no_grad():
        before = model(ids, backend="reference")[0]
    adapted = apply_lora(model, rank=2, alpha=4, targets=["key", "value", "receptance", "output"])
    assert adapted and all(n.startswith("blocks") for n in adapted)
    mark_only_lora_trainable(model)
    with torch.no_grad():
        assert torch.equal(model(ids, backend="reference")[0], before)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(3):
        opt.zero_grad()
        model(ids, backend="reference")[0].logsumexp(-1).mean().backward()
        opt.step()
    with torch.no_grad():
        trained = model(ids, backend="reference")[0]
        assert not torch.allclose(trained, before)
        merge_lora(model)
        assert torch.allclose(model(ids, backend="reference")[0], trained, atol=1e-4)
    assert all(k.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for k in lora_state_dict(model))


@pytest.mark.parametrize("version", list(SIZES))
def test_unmerged_lora_acts_in_rnn_mode_as_in_sequence_mode(version):
    model = _tiny(version)
    apply_lora(model, rank=2, alpha=4, targets=["key", "value", "receptance", "output"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.5)  # a trained adapter: the outputs must differ from the base model's
        ids = torch.randint(0, model.config.vocab_size, (1, 5))
        seq = model(ids, backend="reference")[0]
        state, steps = None, []
        for t in range(ids.shape[1]):
            logits, state = model(ids[:, t : t + 1], state)
            steps.append(logits)
        merge_lora(model)
        merged = model(ids, backend="reference")[0]
    torch.testing.assert_close(torch.cat(steps, 1), seq, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(merged, seq, rtol=1e-4, atol=1e-4)
