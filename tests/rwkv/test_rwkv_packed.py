"""oneDNN-packed bf16 weights for one-token decode: same logits as the dense path, rebuilt when weights change."""

import pytest
import torch

from mmrwkv.rwkv import RWKV, config_for, packed

pytestmark = pytest.mark.skipif(not packed.supported(), reason="this torch build has no oneDNN")


@pytest.fixture
def bf16_model():
    torch.manual_seed(3)
    return RWKV(config_for("v7-tiny", n_layer=2)).to(torch.bfloat16).eval()


def _decode(model, ids):
    state, out = model.init_state(ids.shape[0]), []
    for t in range(ids.shape[1]):
        logits, state = model(ids[:, t : t + 1], state)
        out.append(logits)
    return torch.cat(out, 1), state


def test_packed_decode_equals_dense_decode(bf16_model, monkeypatch):
    ids = torch.randint(0, 256, (2, 4))
    with torch.no_grad():
        fast, fast_state = _decode(bf16_model, ids)
        assert packed.packed_weight(bf16_model.head.weight) is not None
        monkeypatch.setenv(packed.ENV_VAR, "0")
        dense, dense_state = _decode(bf16_model, ids)
    torch.testing.assert_close(fast, dense, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(fast_state.wkv, dense_state.wkv, rtol=1e-2, atol=1e-2)


def test_packed_copy_follows_in_place_and_replaced_weights(bf16_model):
    weight = bf16_model.head.weight
    x = torch.randn(1, weight.shape[1], dtype=torch.bfloat16)
    with torch.no_grad():
        first = packed.decode_linear(x, weight)
        weight.mul_(2)
        torch.testing.assert_close(packed.decode_linear(x, weight), torch.nn.functional.linear(x, weight))
        assert not torch.equal(packed.decode_linear(x, weight), first)
        weight.data = torch.randn_like(weight.data)
        torch.testing.assert_close(packed.decode_linear(x, weight), torch.nn.functional.linear(x, weight))


def test_no_packing_with_autograd_or_for_fp32():
    model = RWKV(config_for("v7-tiny", n_layer=1))
    assert packed.packed_weight(model.head.weight) is None
    p = {"W": model.head.weight.detach().bfloat16()}
    packed.add_packed(p, ("W",))
    assert list(p) == ["W"]
    with torch.no_grad():
        packed.add_packed(p, ("W",))
    assert set(p) == {"W", "W" + packed.SUFFIX}
