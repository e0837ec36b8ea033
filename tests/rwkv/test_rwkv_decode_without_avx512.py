"""Decode on a CPU without AVX-512: no route packs weights with oneDNN (its bf16 packing raises there:
'mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq'),
so bf16 steps, batched steps and sampled batches run on any CPU."""

import pytest
import torch

from mmrwkv.inference import engine
from mmrwkv.inference.generate import SamplingConfig, generate_batch
from mmrwkv.kernels import cpu as native
from mmrwkv.rwkv import RWKV, config_for


def _refuse(*args, **kwargs):
    raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw, "
                       "avx512vl and avx512dq")  # fmt: skip


@pytest.fixture
def without_avx512(monkeypatch):
    """oneDNN's weight packing raising as it does on a CPU without AVX-512."""
    for name in ("_reorder_linear_weight", "_reorder_mkldnn_rnn_layer_weight"):
        monkeypatch.setattr(torch.ops.mkldnn, name, _refuse)


class _Bytes:
    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode_bytes(self, ids) -> bytes:
        return bytes(i for i in ids if i < 256)


@pytest.mark.parametrize("native_on", ["1", "0"], ids=["native", "plain-torch"])
@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_bf16_batches_decode_without_avx512(without_avx512, monkeypatch, native_on, temperature):
    monkeypatch.setenv(native.ENV_VAR, native_on)
    torch.manual_seed(1)
    model = RWKV(config_for("v7-tiny", n_layer=2)).to(torch.bfloat16).eval()
    sampling = SamplingConfig(temperature=temperature, max_tokens=4, eos_ids=[], seed=1)
    results = generate_batch(model, _Bytes(), ["a", "two words", "x"], sampling)
    assert [len(r.tokens) for r in results] == [4, 4, 4]


def test_the_fixture_makes_packing_raise(without_avx512):
    with pytest.raises(RuntimeError, match="avx512bw"):
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(4, 4, dtype=torch.bfloat16), 1)


def test_every_route_steps_a_bf16_batch_without_avx512(without_avx512, monkeypatch):
    torch.manual_seed(3)
    model = RWKV(config_for("v7-tiny", n_layer=2)).to(torch.bfloat16).eval()
    ids = torch.randint(0, 256, (3,))
    with torch.inference_mode():
        for exact in (True, False):
            logits, state = engine.step(model, ids, model.init_state(3), exact=exact)
            assert logits.shape == (3, 256) and torch.isfinite(logits.float()).all()
        logits, _ = engine.prefill(model, ids.view(1, -1))
        assert logits.shape == (256,)
