"""RWKVStepper on each route (native, plain torch): equal to sequence mode (logits and every state field)."""

import pytest
import torch

from mmrwkv.inference.generate import stepper_for
from mmrwkv.inference.stepper import RWKVStepper
from mmrwkv.rwkv import RWKV, config_for


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(5)
    m = RWKV(config_for("v7-tiny", n_layer=3)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return m


def _assert_state_close(a, b):
    # absolute error relative to the field's scale, as the native decode's tests (its fp32 sums run in another order)
    for name in ("att_x_prev", "wkv", "ffn_x_prev"):
        want = getattr(b, name)
        torch.testing.assert_close(getattr(a, name), want, rtol=1e-4, atol=1e-5 * max(1.0, want.abs().max().item()))


# a batch's rows take the native one-sequence step where it is built (mmrwkv.inference.engine), else plain torch
@pytest.mark.parametrize("native_decode", ["1", "0"], ids=["native", "plain-torch"])
def test_one_token_steps_equal_one_sequence_pass(model, monkeypatch, native_decode):
    monkeypatch.setenv("MMRWKV_NATIVE_DECODE", native_decode)
    ids = torch.randint(0, 256, (3, 6))
    with torch.no_grad():
        full, full_state = model(ids)
    ours = model.init_state(3)
    stepper = RWKVStepper(model)
    for t in range(ids.shape[1]):
        logits, ours = stepper(ids[:, t], ours)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-4)
    _assert_state_close(ours, full_state)


def test_stepper_continues_a_sequence_mode_prefill(model):
    prompt = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        _, state = model(prompt[:, :-1])
        full, _ = model(prompt)
    logits, _ = RWKVStepper(model)(prompt[0, -1:], state)
    torch.testing.assert_close(logits[0], full[0, -1], rtol=1e-4, atol=1e-4)


def test_stepper_from_embeddings_equals_forward_on_embeddings(model):
    x = torch.randn(2, model.config.n_embd)
    with torch.no_grad():
        ref, _ = model(x[:, None])
    logits, _ = RWKVStepper(model).step_embedding(x, model.init_state(2))
    torch.testing.assert_close(logits, ref[:, 0], rtol=1e-4, atol=1e-4)


def test_stepper_sees_updated_parameters(model):
    m = RWKV(config_for("v7-tiny")).eval()
    stepper = RWKVStepper(m)
    ids = torch.tensor([7])
    with torch.no_grad():
        m.blocks[0].att.x_r.add_(0.5)
        m.blocks[1].ffn.value.weight.normal_()
        ref, _ = m(ids[:, None])
    logits, _ = stepper(ids, m.init_state(1))
    torch.testing.assert_close(logits, ref[:, 0], rtol=1e-4, atol=1e-4)


def test_stepper_for_returns_one_cached_stepper_per_model_of_any_generation(model):
    assert isinstance(stepper_for(model), RWKVStepper)
    assert stepper_for(model) is stepper_for(model)
    v6 = RWKV(config_for("v6-tiny")).eval()
    ids = torch.tensor([1, 2])
    logits, _ = stepper_for(v6)(ids, v6.init_state(2))
    with torch.no_grad():
        ref, _ = v6(ids[:, None])
    torch.testing.assert_close(logits, ref[:, 0])


def test_column_major_linears_keeps_outputs_and_parameters(tmp_path):
    from mmrwkv.checkpoint import load_rwkv, save_rwkv
    from mmrwkv.inference.stepper import column_major_linears

    m = RWKV(config_for("v7-tiny")).eval()
    params = {name: id(p) for name, p in m.named_parameters()}
    ids = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        before, _ = m(ids)
        column_major_linears(m)
        after, _ = m(ids)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert not m.head.weight.is_contiguous() and m.head.weight.t().is_contiguous()
    assert {name: id(p) for name, p in m.named_parameters()} == params
    logits, _ = RWKVStepper(m)(ids[:, 0], m.init_state(2))
    torch.testing.assert_close(logits, before[:, 0], rtol=1e-4, atol=1e-4)
    reloaded = load_rwkv(save_rwkv(m, tmp_path / "ckpt"))
    torch.testing.assert_close(reloaded.head.weight, m.head.weight)
