"""The model API: sequence mode == RNN mode, ids == embeddings, batching, last_only, state handling."""

from __future__ import annotations

import pytest
import torch

from mmrwkv.rwkv import RWKV, config_for

VERSIONS = ["4", "5.0", "5.1", "5.2", "6", "7"]


@pytest.mark.parametrize("version", VERSIONS)
def test_prefix_then_steps_equals_one_sequence_pass_for_every_split(version, random_model):
    model = random_model(version)
    ids = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        full, full_state = model(ids)
        for split in range(1, 7):
            logits, state = model(ids[:, :split])
            parts = [logits]
            for t in range(split, 6):
                step, state = model(ids[:, t : t + 1], state)
                parts.append(step)
            torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(state.wkv, full_state.wkv, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(state.att_x_prev, full_state.att_x_prev)


@pytest.mark.parametrize("version", ["4", "5.2", "6", "7"])
def test_embeddings_input_gives_the_same_logits_as_ids(version, random_model):
    model = random_model(version)
    ids = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        from_ids, _ = model(ids)
        from_emb, _ = model(model.embed(ids))
    torch.testing.assert_close(from_emb, from_ids)


def test_embed_returns_raw_rows_and_ln0_is_applied_inside(random_model):
    model = random_model("7")
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(model.embed(ids), model.emb.weight[ids])
    with torch.no_grad():
        before, _ = model(ids)
        model.blocks[0].ln0.weight.mul_(2.0)
        after, _ = model(ids)
    assert not torch.allclose(before, after), "ln0 must act on the embeddings inside forward"


@pytest.mark.parametrize("version", ["4", "5.2", "6", "7"])
def test_batched_rows_equal_rows_run_one_at_a_time(version, random_model):
    model = random_model(version)
    ids = torch.randint(0, 256, (3, 4))
    with torch.no_grad():
        batched, state = model(ids)
        for i in range(3):
            single, single_state = model(ids[i : i + 1])
            torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(state[i].wkv, single_state.wkv, rtol=1e-4, atol=1e-5)


def test_last_only_returns_the_last_position_with_a_time_axis(random_model):
    model = random_model("6")
    ids = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        full, _ = model(ids)
        last, _ = model(ids, last_only=True)
    assert last.shape == (2, 1, 256)
    torch.testing.assert_close(last, full[:, -1:])


def test_forward_hidden_is_after_ln_out_and_feeds_the_head(random_model):
    model = random_model("7")
    ids = torch.randint(0, 256, (1, 4))
    with torch.no_grad():
        h, _ = model.forward_hidden(ids)
        logits, _ = model(ids)
    torch.testing.assert_close(model.head(h), logits)
    torch.testing.assert_close(h.mean(-1), (model.ln_out.bias.mean()).expand(1, 4), atol=0.2, rtol=0)


def test_forward_never_mutates_the_state_it_is_given(random_model):
    model = random_model("7")
    with torch.no_grad():
        _, state = model(torch.randint(0, 256, (1, 3)))
        kept = state.clone()
        model(torch.randint(0, 256, (1, 2)), state)
    torch.testing.assert_close(state.wkv, kept.wkv, rtol=0, atol=0)
    torch.testing.assert_close(state.ffn_x_prev, kept.ffn_x_prev, rtol=0, atol=0)


def test_gradients_flow_through_the_state_across_segments(random_model):
    model = random_model("7").train()
    ids = torch.randint(0, 256, (1, 6))
    _, state = model(ids[:, :3])
    logits, _ = model(ids[:, 3:], state)
    logits.sum().backward()
    grad = model.blocks[0].att.key.weight.grad
    model.zero_grad()
    logits2, _ = model(ids[:, 3:], state.detach())
    logits2.sum().backward()
    assert not torch.allclose(grad, model.blocks[0].att.key.weight.grad)


def test_every_parameter_receives_a_gradient(random_model):
    model = random_model("7").train()
    logits, _ = model(torch.randint(0, 256, (2, 5)))
    logits.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_bad_inputs_raise_clear_errors(random_model):
    model = random_model("5.2")
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="embeddings must be"):
        model(torch.zeros(1, 3, 7))
    with pytest.raises(ValueError, match="no tokens"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="state batch size 2 != input batch size 1"):
        model(torch.zeros(1, 3, dtype=torch.long), model.init_state(2))


def test_rwkv7_layer0_has_no_value_residual_parameters():
    model = RWKV(config_for("v7-tiny"))
    names = {n for n, _ in model.named_parameters()}
    assert "blocks.0.att.v0" not in names and "blocks.1.att.v0" in names
    assert {"blocks.0.ln0.weight", "emb.weight", "head.weight", "ln_out.weight"} <= names
    assert not any(n.startswith("blocks.1.ln0") for n in names)


@pytest.mark.parametrize("version", ["4", "5.0", "6", "7"])
def test_bf16_weights_keep_an_fp32_wkv_state_and_stay_close_to_fp32(version, random_model):
    model = random_model(version)
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        ref, _ = model(ids)
        out, state = model.to(torch.bfloat16)(ids)
    assert out.dtype == torch.bfloat16 and state.wkv.dtype == torch.float32
    assert state.att_x_prev.dtype == torch.bfloat16
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() < 5e-2


@pytest.mark.parametrize("version", ["5.2", "6", "7"])
def test_model_gradients_agree_between_chunked_and_reference_wkv(version, random_model):
    model = random_model(version).train()
    ids = torch.randint(0, 256, (2, 40))
    grads = {}
    for backend in ("reference", "chunked"):
        model.zero_grad()
        logits, state = model(ids, backend=backend)
        (logits.square().mean() + state.wkv.square().mean()).backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, grad in grads["reference"].items():
        torch.testing.assert_close(grads["chunked"][name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_a_from_scratch_rwkv7_learns_a_repeating_sequence():
    torch.manual_seed(0)
    model = RWKV(config_for("v7-tiny", vocab_size=16))
    ids = torch.arange(12).remainder(5).view(1, -1).repeat(2, 1)  # 0 1 2 3 4 0 1 ...
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        logits, _ = model(ids[:, :-1], backend="reference")
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
