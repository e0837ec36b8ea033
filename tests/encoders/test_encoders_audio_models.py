"""Audio encoders: log-mel front end, tiny_whisper and torchaudio wav2vec2 / HuBERT at tiny sizes."""

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from mmrwkv.encoders import build
from mmrwkv.encoders.audio.frontend import LogMel
from mmrwkv.errors import CheckpointError, ConfigError, MediaError

TINY_W2V = {
    "extractor_mode": "layer_norm",
    "extractor_conv_layer_config": [(8, 10, 5), (8, 3, 2), (8, 2, 2)],
    "extractor_conv_bias": True,
    "encoder_embed_dim": 16,
    "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 8,
    "encoder_pos_conv_groups": 2,
    "encoder_num_layers": 3,
    "encoder_num_heads": 2,
    "encoder_attention_dropout": 0.0,
    "encoder_ff_interm_features": 32,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0,
    "encoder_layer_norm_first": True,
    "encoder_layer_drop": 0.0,
}


def _tone(seconds: float, rate: int = 16000, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.3 * torch.sin(2 * math.pi * freq * t) + 0.01 * torch.randn(t.shape)


def test_log_mel_shape_range_and_bins():
    mel = LogMel(n_mels=80)(_tone(0.5))
    assert mel.shape == (80, 50)
    assert mel.max() <= 1.5 and mel.min() >= mel.max() - 2.0 - 1e-6  # 8 decades / 4
    assert LogMel(n_mels=128)(_tone(0.1)).shape == (128, 10)
    with pytest.raises(ConfigError, match="n_mels=64"):
        LogMel(n_mels=64)


def test_log_mel_puts_a_tone_in_the_right_band():
    low, high = LogMel()(_tone(0.3, freq=300.0)), LogMel()(_tone(0.3, freq=4000.0))
    assert low.mean(dim=1).argmax() < high.mean(dim=1).argmax()


def test_tiny_whisper_tokens_and_padding_mask():
    enc = build("tiny_whisper", width=16, depth=1, heads=2, max_seconds=2.0).eval()
    items = [enc.preprocess((_tone(s), 16000)) for s in (1.0, 0.33, 0.5)]
    assert [it.shape[-1] for it in items] == [100, 33, 50]
    counts = [enc.num_tokens(it) for it in items]
    assert counts == [50, 17, 25]
    batch = enc.collate(items)
    assert batch.shape == (3, 81, 100)
    with torch.no_grad():
        out = enc(batch)
        assert out.shape == (3, 50, 16) and enc.out_dim == 16
        for i, item in enumerate(items):
            alone = enc(enc.collate([item]))[0]
            assert torch.allclose(out[i, : counts[i]], alone, atol=1e-5)
            assert torch.all(out[i, counts[i] :] == 0)


def test_tiny_whisper_reads_files_resamples_and_enforces_length(tmp_path):
    enc = build("tiny_whisper", width=16, depth=1, heads=2, max_seconds=1.0)
    path = tmp_path / "a.wav"
    sf.write(path, _tone(0.5, rate=8000).numpy(), 8000)
    assert enc.preprocess(path).shape == (80, 50)
    sf.write(path, _tone(1.5).numpy(), 16000)
    with pytest.raises(MediaError, match="over the limit of 1.0 s"):
        enc.preprocess(path)
    trunc = build("tiny_whisper", width=16, depth=1, heads=2, max_seconds=1.0, truncate=True)
    assert trunc.preprocess(path).shape == (80, 100)
    with pytest.raises(MediaError, match="too short"):
        enc.preprocess((torch.randn(100), 16000))


def test_tiny_whisper_trains():
    enc = build("tiny_whisper", width=16, depth=1, heads=2, max_seconds=1.0)
    enc(enc.collate([enc.preprocess((_tone(0.2), 16000))])).pow(2).mean().backward()
    assert enc.conv1.weight.grad.abs().sum() > 0


def test_wav2vec2_tiny_config_tokens_layer_and_padding():
    enc = build("wav2vec2", config=TINY_W2V, layer=1, max_seconds=1.0).eval()
    assert len(enc.model.encoder.transformer.layers) == 2 and enc.out_dim == 16
    items = [enc.preprocess((_tone(s), 16000)) for s in (0.2, 0.1)]
    counts = [enc.num_tokens(it) for it in items]
    # 3200 samples: (3200 - 10) // 5 + 1 = 639 -> 319 -> 159
    assert counts == [159, 79]
    with torch.no_grad():
        out = enc(enc.collate(items))
        assert out.shape == (2, 159, 16)
        alone = enc(enc.collate(items[1:]))[0]
    assert torch.allclose(out[1, :79], alone, atol=1e-4) and torch.all(out[1, 79:] == 0)


def test_wav2vec2_weights_file_round_trip(tmp_path):
    import torchaudio

    ref = torchaudio.models.wav2vec2_model(aux_num_out=None, **TINY_W2V).eval()
    path = tmp_path / "w2v.pt"
    torch.save(ref.state_dict(), path)
    enc = build("wav2vec2", config=TINY_W2V, weights=str(path)).eval()
    wave = _tone(0.1)[None, :]
    with torch.no_grad():
        expected = ref.extract_features(wave)[0][-1]
        assert torch.allclose(enc(wave[:, None, :]), expected, atol=1e-5)
    torch.save({"nope": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"w2v\.pt.*missing keys"):
        build("wav2vec2", config=TINY_W2V, weights=str(path))


def test_wav2vec2_normalize_option():
    enc = build("wav2vec2", config=TINY_W2V, normalize=True)
    feats = enc.preprocess((_tone(0.1) + 0.5, 16000))
    assert feats.shape == (1, 1600)
    assert abs(feats.mean().item()) < 1e-4 and abs(feats.std().item() - 1) < 1e-3


def test_hubert_default_arch_and_bad_configs():
    enc = build("hubert", layer=0)
    assert enc.out_dim == 768 and len(enc.model.encoder.transformer.layers) == 1
    with pytest.raises(ConfigError, match="unknown arch 'wav2vec3'.*hubert_base"):
        build("wav2vec2", arch="wav2vec3")
    with pytest.raises(ConfigError, match="layer 9 is out of range"):
        build("wav2vec2", config=TINY_W2V, layer=9)
    with pytest.raises(MediaError, match="too short"):
        build("wav2vec2", config=TINY_W2V).preprocess((torch.randn(12), 16000))


def test_audio_bytes_input():
    buf = io.BytesIO()
    sf.write(buf, np.asarray(_tone(0.2)), 16000, format="FLAC")
    enc = build("tiny_whisper", width=16, depth=1, heads=2)
    assert enc.preprocess(buf.getvalue()).shape == (80, 20)
