"""The native token step's plan (parameters taken once per model) and its greedy pick (the argmax found while the
head's rows are computed): both must give exactly what the uncached path gives, whatever happens to the model."""

import platform

import pytest
import torch
from torch import nn

from mmrwkv.inference import engine
from mmrwkv.kernels import cpu as native
from mmrwkv.rwkv import RWKV, config_for

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="the native decode is built on Linux only")


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = config_for("v7-tiny", n_layer=2, n_embd=64, head_size=16, dim_w=8, dim_a=8, dim_v=4, dim_g=8)
    m = RWKV(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return m


def _step(model, i, state):
    """One token through the engine -> (logits (1, 1, V), state), as the model's forward gives them."""
    logits, state = engine.step(model, torch.tensor([i]), state)
    return logits.unsqueeze(1), state


def _decode(model, ids):
    """Logits of one-token steps over ids (the native route with its plan), and those of sequence mode."""
    state, out = model.init_state(1), []
    with torch.no_grad():
        for i in ids:
            logits, state = _step(model, i, state)
            out.append(logits[0, -1])
        seq, _ = model(torch.tensor([ids]))
    return torch.stack(out), seq[0]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


@pytest.fixture
def plan_steps(monkeypatch):
    """Counts the engine's native token steps ("tokens") and the plans it takes ("plans")."""
    counter = {"tokens": 0, "plans": 0}
    token, plan = engine._native_token, native.token_plan

    def counting_token(*args):
        out = token(*args)
        counter["tokens"] += out is not None
        return out

    def counting_plan(*args):
        counter["plans"] += 1
        return plan(*args)

    monkeypatch.setattr(engine, "_native_token", counting_token)
    monkeypatch.setattr(native, "token_plan", counting_plan)
    return counter


def test_a_plan_follows_swapped_layers_new_weight_data_in_place_updates_and_dtype_moves(plan_steps):
    model, ids = _model(), [3, 1, 4, 1, 5]
    got, want = _decode(model, ids)
    _close(got, want)
    assert plan_steps["tokens"] == len(ids) and plan_steps["plans"] == 1  # taken once, every token runs on it
    with torch.no_grad():
        # a layer replaced by another (new Parameter objects): registered, so the plan is taken again
        fresh = nn.Linear(64, 64, bias=False)
        fresh.weight.normal_(0, 0.3)
        model.blocks[1].att.output = fresh
        got, want = _decode(model, ids)
        _close(got, want)
        # a weight given new data (same Parameter, other memory): the plan declines and is taken again
        model.blocks[0].ffn.key.weight.data = torch.randn_like(model.blocks[0].ffn.key.weight) * 0.3
        got, want = _decode(model, ids)
        _close(got, want)
        # in place (what an optimizer does): the plan reads the same tensors
        model.head.weight.mul_(-1.5)
        model.blocks[0].att.w0.add_(0.7)
        got, want = _decode(model, ids)
        _close(got, want)
        # a parameter swapped for a new one of the same shape
        model.blocks[1].att.k_k = nn.Parameter(torch.rand_like(model.blocks[1].att.k_k))
        got, want = _decode(model, ids)
        _close(got, want)
    model.to(torch.bfloat16)  # every tensor's data and dtype change
    got, want = _decode(model, ids)
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2 * want.abs().max().item())
    # torch's opt-in conversion that swaps new tensors in for the parameters, unseen by any hook: it refuses
    # parameters anything else refers to (a plan, an optimizer) until released; no plan is taken while it is on
    engine.release_plans(model)
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.to(torch.float32)
        plans, tokens = plan_steps["plans"], plan_steps["tokens"]
        got, want = _decode(model, ids)
        _close(got, want)
        # native steps on the parameters of each call, no plan
        assert plan_steps["plans"] == plans and plan_steps["tokens"] == tokens + len(ids) and model not in engine._plans
        model.to(torch.bfloat16)  # still possible: no plan holds the parameters
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_step_picks_torch_argmax_with_ties_and_nan_on_any_team(threads):
    model = _model(seed=1)
    params = [engine.native_weights(block) for block in model.blocks]
    head = model.head.weight.detach().clone()
    V = head.shape[0]
    heads = {"random": head.clone()}
    state = model.init_state(1)
    x = model.emb.weight[5].detach().view(1, -1)
    with torch.no_grad():
        top = int(_step(model, 5, model.init_state(1))[0].argmax())
    tied = head.clone()
    tied[V - 3] = tied[V // 2] = tied[7] = head[top] * 3  # three equal maxima far apart: the first wins
    heads["tied"] = tied
    nan = head.clone()
    nan[V - 5], nan[V // 3] = float("nan"), float("nan")  # torch.argmax: the first NaN
    heads["nan"] = nan
    with torch.no_grad():
        for name, h in heads.items():
            ends = (model.blocks[0].ln0.weight, model.blocks[0].ln0.bias, model.ln_out.weight, model.ln_out.bias, h)
            out = native.load().token_step(x, state.att_x_prev, state.wkv, state.ffn_x_prev, 4,
                                           native.layer_args(params), list(ends), threads)  # fmt: skip
            assert native.step_pick(out[0]) == int(out[0].argmax()), name
            if name == "tied":
                assert native.step_pick(out[0]) == 7 and out[0][0, 7] > 0


def test_argmax_uses_the_steps_pick_only_for_those_logits_unchanged():
    model = _model(seed=2)
    state = model.init_state(1)
    with torch.no_grad():
        logits, state = _step(model, 7, state)
        row = logits[0, -1]
        assert native.step_pick(row) == int(row.argmax())  # the step's own pick, for a view of all its logits
        assert native.argmax(row).tolist() == [int(row.argmax())]
        assert native.step_pick(row[:-1]) is None  # part of them: read again
        assert native.step_pick(logits.view(-1)) == int(row.argmax())
        copy = row.clone()
        assert native.step_pick(copy) is None
        row[11] = row.max() + 1  # changed in place (a penalty, a mask): read again
        assert native.step_pick(row) is None
        assert native.argmax(row).tolist() == [11]
        older = logits
        newer, state = _step(model, 8, state)
        assert native.step_pick(older[0, -1]) is None  # only the last step's logits are remembered
        assert native.argmax(newer[0, -1]).tolist() == [int(newer[0, -1].argmax())]


def test_logits_kept_by_the_caller_are_never_written_over():
    model = _model(seed=3)
    state = model.init_state(1)
    kept = []
    with torch.no_grad():
        for i in [1, 2, 3, 4, 5, 6]:
            logits, state = _step(model, i, state)
            kept.append((logits, logits.clone()))
            logits, state = _step(model, i + 10, state)  # dropped: its memory may serve again
    for held, copy in kept:
        assert torch.equal(held, copy)


def test_inference_mode_logits_give_their_pick_only_when_asked():
    model = _model(seed=4)
    with torch.inference_mode():
        logits, _ = _step(model, 3, model.init_state(1))
        row = logits[0, -1]
        assert native.step_pick(row) == int(row.argmax())  # a greedy sampler's question
        row[2] = row.max() + 1  # changed in place: an inference tensor counts no versions...
        assert native.argmax(row).tolist() == [2]  # ...so argmax never uses the pick for one


def test_a_greedy_sampler_takes_the_steps_pick_and_torch_argmax_otherwise(monkeypatch):
    from mmrwkv.inference.generate import Sampler, SamplingConfig, stepper_for

    model = _model(seed=5)
    asked = []
    real = native.step_pick
    monkeypatch.setattr(native, "step_pick", lambda t: asked.append(real(t)) or asked[-1])
    greedy = Sampler(SamplingConfig(temperature=0), 1, 256)
    logits, state = stepper_for(model)(torch.tensor([9]), model.init_state(1))
    assert greedy(logits).tolist() == [int(logits.argmax())] and asked[-1] == int(logits.argmax())
    other = logits.clone()
    other[0, 4] = other.max() + 1
    assert greedy(other).tolist() == [4] and asked[-1] is None  # not the step's logits: torch.argmax
    banned = Sampler(SamplingConfig(temperature=0, banned_ids=[int(logits.argmax())]), 1, 256)
    asked.clear()
    assert banned(logits).tolist() != [int(logits.argmax())] and not asked  # a ban changes the pick: not asked


def test_the_stepper_runs_on_the_plan_and_agrees_with_sequence_mode(monkeypatch):
    from mmrwkv.inference.stepper import RWKVStepper

    model, ids = _model(seed=6), [5, 9, 2, 7, 7, 1]
    straight = []
    real = engine._native_ids
    monkeypatch.setattr(engine, "_native_ids", lambda *a: straight.append(real(*a)) or straight[-1])
    stepper = RWKVStepper(model)
    state, got = model.init_state(1), []
    for i in ids:
        logits, state = stepper(torch.tensor([i]), state)
        got.append(logits[0])
    with torch.no_grad():
        seq, seq_state = model(torch.tensor([ids]))
    _close(torch.stack(got), seq[0])
    _close(state.wkv, seq_state.wkv)
    assert len(straight) == len(ids) and all(out is not None for out in straight)
    with pytest.raises(IndexError):  # an id past the vocabulary: RWKV.forward's embedding error, not a wrong row
        stepper(torch.tensor([256]), state)
    assert straight[-1] is None
    with pytest.raises(IndexError):
        stepper(torch.tensor([-1]), state)


def test_the_stepper_leaves_hooked_or_replaced_forwards_their_call():
    from mmrwkv.inference.stepper import RWKVStepper

    model = _model(seed=7)
    stepper = RWKVStepper(model)
    state = model.init_state(1)
    _, state = stepper(torch.tensor([1]), state)  # takes the plan
    seen = []
    handle = model.register_forward_hook(lambda module, args, out: seen.append(out[0].shape))
    _, state = stepper(torch.tensor([2]), state)
    handle.remove()
    assert seen == [torch.Size([1, 1, 256])]
    model.forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("replaced"))
    with pytest.raises(RuntimeError, match="replaced"):
        stepper(torch.tensor([3]), state)


def test_switching_the_native_decode_off_stops_the_planned_steps_too(monkeypatch):
    from mmrwkv.inference.stepper import RWKVStepper

    model = _model(seed=8)
    stepper = RWKVStepper(model)
    _, state = stepper(torch.tensor([1]), model.init_state(1))  # takes the plan
    ran = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: ran.append(args[0].shape))
    monkeypatch.setenv(native.ENV_VAR, "0")
    stepper(torch.tensor([2]), state)
    assert ran == [torch.Size([1, 1, 64])]  # the blocks ran in sequence mode, not the plan
