"""Odd and huge audio sample rates: resampled through a small rational ratio or refused from the header, never a
filter bank that grows with the rate (48001 Hz once took 21 s and 14 GB)."""

import io
import time

import numpy as np
import pytest
import soundfile as sf

from mmrwkv import limits
from mmrwkv.encoders.media import load_audio
from mmrwkv.errors import MediaError


def _wav(rate: int, samples: int = 4800) -> bytes:
    buf = io.BytesIO()
    noise = (0.3 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)
    sf.write(buf, noise, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@pytest.mark.parametrize("rate", [16001, 48001, 96001, 383999])
def test_an_odd_sample_rate_resamples_quickly_to_the_right_length(rate):
    start = time.perf_counter()
    wave = load_audio(_wav(rate), sample_rate=16000)
    assert time.perf_counter() - start < 2.0
    assert abs(wave.numel() - 4800 * 16000 / rate) <= 2


def test_an_odd_rate_resamples_as_its_round_neighbour_does():
    near = load_audio(_wav(48000), sample_rate=16000)
    odd = load_audio(_wav(48001), sample_rate=16000)
    assert odd.shape == near.shape
    assert float((odd - near).abs().max()) < 1e-5


def test_a_rate_over_the_limit_is_refused_from_the_header():
    with pytest.raises(MediaError, match=r"sample rate 1000003 Hz is outside 100\.\.384000 Hz.*MMRWKV_MAX_AUDIO_RATE"):
        load_audio(_wav(1000003), sample_rate=16000)
    with pytest.raises(MediaError, match="sample rate 5 Hz"):
        load_audio((np.ones(10, dtype=np.float32), 5), sample_rate=16000)


def test_the_rate_limit_can_be_raised(monkeypatch):
    monkeypatch.setenv("MMRWKV_MAX_AUDIO_RATE", "2000000")
    wave = load_audio(_wav(1000003, 48000), sample_rate=16000)
    assert abs(wave.numel() - 768) <= 2
    with limits.override(max_audio_rate=500_000), pytest.raises(MediaError, match="outside 100..500000"):
        load_audio(_wav(1000003), sample_rate=16000)


def test_common_rates_keep_their_exact_ratio_and_odd_ones_stay_close():
    assert limits.resample_ratio(44100, 16000) == (441, 160)
    assert limits.resample_ratio(22050, 24000) == (147, 160)
    for rate in (48001, 16001, 12347, 383999, 77777):
        p, q = limits.resample_ratio(rate, 16000)
        assert q <= limits.MAX_RATE_DENOMINATOR and p * q <= limits.MAX_EXACT_TAPS * 12
        assert abs(p / q - rate / 16000) <= limits.RATE_TOLERANCE * rate / 16000
