"""tiny_whisper's optional pitch track: dominant band and its slope per frame, appended to the log-mel rows."""

import math

import torch

from mmrwkv.encoders import build
from mmrwkv.encoders.audio.frontend import LogMel, pitch_track


def _sweep(seconds: float, f0: float, f1: float, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    # instantaneous frequency moves linearly from f0 to f1
    return 0.4 * torch.sin(2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))


def test_pitch_track_orders_tones_and_signs_sweeps():
    mel = LogMel()
    low, high = pitch_track(mel(_sweep(0.3, 300.0, 300.0))), pitch_track(mel(_sweep(0.3, 2000.0, 2000.0)))
    assert low.shape == (2, 30)
    assert low[0].mean() < 0.0 < high[0].mean() and high[0].max() <= 1.0 and low[0].min() >= -1.0
    # a steady tone has no slope; a rising sweep a positive one, a falling sweep a negative one
    assert low[1, 3:-3].abs().max() < 0.05
    rising, falling = pitch_track(mel(_sweep(0.4, 300.0, 2000.0))), pitch_track(mel(_sweep(0.4, 2000.0, 300.0)))
    assert rising[1, 5:-5].min() > 0.0 > falling[1, 5:-5].max()
    assert rising[0, -5] > rising[0, 5] and falling[0, -5] < falling[0, 5]


def test_tiny_whisper_pitch_rows_and_padding_mask():
    plain = build("tiny_whisper", width=16, depth=1, heads=2, max_seconds=2.0)
    enc = build("tiny_whisper", width=16, depth=1, heads=2, max_seconds=2.0, pitch=True).eval()
    wave = _sweep(0.5, 400.0, 1500.0)
    item = enc.preprocess((wave, 16000))
    assert item.shape == (82, 50) and plain.preprocess((wave, 16000)).shape == (80, 50)
    assert torch.equal(item[:80], plain.preprocess((wave, 16000)))
    assert enc.conv1.in_channels == 82 and enc.num_tokens(item) == 25
    items = [item, enc.preprocess((_sweep(0.33, 900.0, 900.0), 16000))]
    batch = enc.collate(items)
    assert batch.shape == (2, 83, 50)
    with torch.no_grad():
        out = enc(batch)
        alone = enc(enc.collate(items[1:]))[0]
    assert torch.allclose(out[1, :17], alone, atol=1e-5) and torch.all(out[1, 17:] == 0)


def test_tiny_whisper_pitch_trains_through_its_rows():
    enc = build("tiny_whisper", width=16, depth=1, heads=2, max_seconds=1.0, pitch=True)
    enc(enc.collate([enc.preprocess((_sweep(0.2, 300.0, 900.0), 16000))])).pow(2).mean().backward()
    assert enc.conv1.weight.grad[:, 80:].abs().sum() > 0
