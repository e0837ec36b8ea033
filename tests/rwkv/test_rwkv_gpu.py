"""The model on a CUDA GPU (default backend there: the CUDA WKV kernels) against the CPU reference backend."""

from __future__ import annotations

import copy

import pytest
import torch

VERSIONS = ["4", "5.0", "5.1", "5.2", "6", "7"]


@pytest.mark.gpu
@pytest.mark.parametrize("version", VERSIONS)
def test_cuda_model_matches_the_cpu_reference_in_sequence_and_rnn_mode(version, random_model):
    model = random_model(version, n_embd=128, head_size=64)
    ids = torch.randint(0, 256, (2, 70))
    with torch.no_grad():
        ref, ref_state = model(ids, backend="reference")
        gpu = copy.deepcopy(model).cuda()
        full, state = gpu(ids.cuda())
        torch.testing.assert_close(full.cpu(), ref, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(state.wkv.cpu(), ref_state.wkv, rtol=1e-3, atol=1e-4)
        logits, state = gpu(ids[:, :50].cuda())
        steps = [logits]
        for t in range(50, 70):
            step, state = gpu(ids[:, t : t + 1].cuda(), state)
            steps.append(step)
        torch.testing.assert_close(torch.cat(steps, 1).cpu(), ref, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_cuda_bf16_model_keeps_an_fp32_state_and_finite_logits(random_model):
    model = random_model("7", n_embd=128, head_size=64).cuda().to(torch.bfloat16)
    with torch.no_grad():
        logits, state = model(torch.randint(0, 256, (2, 33), device="cuda"))
    assert state.wkv.dtype == torch.float32 and logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()
