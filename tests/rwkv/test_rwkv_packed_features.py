"""The oneDNN bf16 packing is chosen only on a CPU that has what it needs: a CPU reported without AVX-512 (and
without AVX-NE-CONVERT) takes the dense path everywhere (batched steps, sampled batches, the head) and never packs."""

import pytest
import torch

from mmrwkv.generate import SamplingConfig, generate_batch
from mmrwkv.rwkv import RWKV, config_for, packed


def _refuse(weight):
    raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw, "
                       "avx512vl and avx512dq")  # fmt: skip


@pytest.fixture
def avx2_cpu(monkeypatch):
    """This machine reported as an AVX2 CPU, where oneDNN's bf16 packing raises (as it does there)."""
    monkeypatch.setattr(packed, "cpu_features", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(packed, "_pack", _refuse)
    packed._CACHE.clear()


def test_a_cpu_without_avx512_is_routed_away_from_the_packed_path(avx2_cpu, monkeypatch):
    torch.manual_seed(3)
    model = RWKV(config_for("v7-tiny", n_layer=2)).to(torch.bfloat16).eval()
    assert not packed.supported()
    ids = torch.randint(0, 256, (2, 3))
    with torch.no_grad():
        assert packed.packed_weight(model.head.weight) is None
        state, got = model.init_state(2), []
        for t in range(ids.shape[1]):  # the batched one-token step: packed weights where supported
            logits, state = model(ids[:, t : t + 1], state)
            got.append(logits)
        monkeypatch.setenv(packed.ENV_VAR, "0")  # the dense path, switched off by hand
        state, want = model.init_state(2), []
        for t in range(ids.shape[1]):
            logits, state = model(ids[:, t : t + 1], state)
            want.append(logits)
    assert torch.equal(torch.cat(got, 1), torch.cat(want, 1))
    assert not packed._CACHE


class _Bytes:
    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode_bytes(self, ids) -> bytes:
        return bytes(i for i in ids if i < 256)


def test_a_sampled_bf16_batch_runs_on_a_cpu_without_avx512(avx2_cpu):
    torch.manual_seed(1)
    model = RWKV(config_for("v7-tiny", n_layer=2)).to(torch.bfloat16).eval()
    sampling = SamplingConfig(temperature=1.0, max_tokens=4, eos_ids=[], seed=1)
    results = generate_batch(model, _Bytes(), ["a", "two words"], sampling)
    assert [len(r.tokens) for r in results] == [4, 4]
    assert not packed._CACHE


def test_the_packing_needs_avx512_or_avx_ne_convert(monkeypatch):
    for features, expected in ((frozenset({"avx2"}), False), (frozenset({"avx2", "avx512"}), True),
                               (frozenset({"avx_ne_convert"}), True), (frozenset(), False)):  # fmt: skip
        monkeypatch.setattr(packed, "cpu_features", lambda f=features: f)
        assert packed.supported() == (expected and torch.backends.mkldnn.is_available())


def test_cpu_features_reads_what_torch_reports():
    features = packed.cpu_features()
    assert ("avx512" in features) == torch.cpu._is_avx512_supported()
    assert ("avx2" in features) == torch.cpu._is_avx2_supported()
