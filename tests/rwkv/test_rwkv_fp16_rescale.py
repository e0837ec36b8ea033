"""fp16 inference of RWKV-4/5/6 halves the residual stream every 6 blocks (the authors' RESCALE_LAYER): on a
checkpoint whose stream outgrows fp16 (a channel every FFN pushes the same way, as large trained models do), the
fp16 logits stay finite and match fp32, in sequence mode and token by token; without the rescaling they do not."""

import pytest
import torch

from mmrwkv.checkpoint import load_official
from mmrwkv.rwkv.model import FP16_RESCALE_EVERY

LAYERS, VOCAB = 24, 256


@pytest.fixture
def loud_checkpoint(official_sd, tmp_path):
    """Factory: version -> .pth whose fp32 residual stream peaks above 65504 (fp16's largest value)."""

    def make(version: str):
        sd = official_sd(version, n_layer=LAYERS, n_embd=64, head_size=32, vocab=VOCAB)
        for i in range(LAYERS):
            # relu(k)^2 >= 0 and sigmoid(r) > 0: channel 0 grows by about the same amount in every block
            sd[f"blocks.{i}.ffn.value.weight"][0, :] = 25.0
        path = tmp_path / f"loud-v{version}.pth"
        torch.save(sd, path)
        return path

    return make


def _stream_peak(model, ids) -> float:
    """Largest |x| of the fp32 residual stream over all blocks."""
    peak = []
    hooks = [b.register_forward_hook(lambda m, i, out: peak.append(out[0].abs().max().item())) for b in model.blocks]
    model(ids)
    for hook in hooks:
        hook.remove()
    return max(peak)


def _rnn_logits(model, ids):
    state, out = None, []
    for t in range(ids.shape[1]):
        logits, state = model(ids[:, t : t + 1], state)
        out.append(logits)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("version", ["4", "5.2", "6"])
@torch.no_grad()
def test_fp16_logits_match_fp32_where_the_stream_exceeds_fp16(loud_checkpoint, version):
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 12))
    path = loud_checkpoint(version)
    m32 = load_official(path, dtype=torch.float32).eval()
    m16 = load_official(path, dtype=torch.float16).eval()
    assert m16.fp16_rescale_every == FP16_RESCALE_EVERY == 6
    assert _stream_peak(m32, ids) > 65504, "the checkpoint must push the stream past fp16's range"
    ref, _ = m32(ids)
    seq, seq_state = m16(ids)
    rnn = _rnn_logits(m16, ids)
    for logits in (seq, rnn):
        assert logits.dtype == torch.float16 and torch.isfinite(logits).all()
        err = ((logits.float() - ref).abs().max() / ref.abs().max()).item()
        assert err < 1e-2, err
    # the state holds post-LayerNorm values and WKV sums: the same in both precisions
    _, ref_state = m32(ids)
    assert torch.isfinite(seq_state.wkv).all()
    assert (seq_state.att_x_prev.float() - ref_state.att_x_prev).abs().max() < 5e-2

    m16.fp16_rescale_every = 0
    unscaled, _ = m16(ids)
    assert not torch.isfinite(unscaled).all(), "without rescaling the fp16 stream overflows"


@torch.no_grad()
def test_fp32_and_rwkv7_are_not_rescaled(loud_checkpoint, random_model):
    m32 = load_official(loud_checkpoint("4"), dtype=torch.float32).eval()
    ids = torch.randint(0, VOCAB, (1, 8))
    before, _ = m32(ids)
    m32.fp16_rescale_every = 0
    after, _ = m32(ids)
    assert torch.equal(before, after)
    assert random_model("7").fp16_rescale_every == 0
