"""load_audio: mono mixdown, resampling, length limits and MediaError on bad clips (all made on the fly)."""

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from mmrwkv.encoders.media import load_audio
from mmrwkv.errors import MediaError


def _tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * math.pi * freq * t).astype(np.float32)
    return np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


def _file_bytes(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_formats_load_as_mono_float_at_target_rate(tmp_path, fmt):
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, _tone(0.5, 8000, channels=2), 8000, format=fmt)
    wave = load_audio(path, sample_rate=16000, max_seconds=1.0)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert wave.numel() == 8000
    # a 440 Hz tone stays 440 Hz after resampling: the spectrum peaks at bin 440 * N / 16000
    peak = torch.fft.rfft(wave).abs().argmax().item()
    assert abs(peak * 16000 / wave.numel() - 440) < 5


def test_stereo_is_mixed_to_the_channel_mean():
    stereo = _tone(0.1, 16000, channels=2)
    wave = load_audio(_file_bytes(stereo, 16000, "WAV"), sample_rate=16000)
    assert torch.allclose(wave, torch.from_numpy(stereo.mean(axis=1)), atol=1e-4)


def test_waveform_tuple_input_channels_first():
    wave = torch.stack([torch.ones(100) * 0.2, torch.ones(100) * 0.4])
    out = load_audio((wave, 16000), sample_rate=16000)
    assert out.shape == (100,) and torch.allclose(out, torch.full((100,), 0.3))


def test_over_length_is_an_error_unless_truncate():
    data = _file_bytes(_tone(2.0, 16000), 16000, "WAV")
    with pytest.raises(MediaError, match=r"2\.00 s is over the limit of 1\.5 s.*truncate=True"):
        load_audio(data, sample_rate=16000, max_seconds=1.5)
    assert load_audio(data, sample_rate=16000, max_seconds=1.5, truncate=True).numel() == 24000
    with pytest.raises(MediaError, match="over the limit"):
        load_audio((torch.randn(32000), 16000), sample_rate=16000, max_seconds=1.0)


def test_silent_clip_is_refused():
    with pytest.raises(MediaError, match="silent"):
        load_audio(_file_bytes(np.zeros((1600, 1), dtype=np.float32), 16000, "WAV"), sample_rate=16000)


def test_nan_audio_is_refused():
    wave = torch.randn(1000)
    wave[10] = float("nan")
    with pytest.raises(MediaError, match="NaN"):
        load_audio((wave, 16000), sample_rate=16000)
    with pytest.raises(MediaError, match="NaN"):
        load_audio(_file_bytes(wave.numpy()[:, None], 16000, "WAV", subtype="FLOAT"), sample_rate=16000)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "corrupt audio or an unsupported format"),
        (b"just some text, not audio", "corrupt audio or an unsupported format"),
    ],
)
def test_bad_bytes_raise_media_error(data, problem):
    with pytest.raises(MediaError, match=problem):
        load_audio(data, sample_rate=16000)


def test_empty_and_missing_files_name_the_path(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(MediaError, match=r"e\.wav.*empty"):
        load_audio(tmp_path / "e.wav", sample_rate=16000)
    with pytest.raises(MediaError, match=r"missing\.wav.*does not exist"):
        load_audio(tmp_path / "missing.wav", sample_rate=16000)


def test_header_only_wav_has_no_samples():
    data = _file_bytes(np.zeros((0, 1), dtype=np.float32), 16000, "WAV")
    with pytest.raises(MediaError, match="no samples|empty"):
        load_audio(data, sample_rate=16000)


def test_bad_tuple_sample_rate_is_refused():
    with pytest.raises(MediaError, match="sample_rate must be a positive int"):
        load_audio((torch.randn(10), 0), sample_rate=16000)
