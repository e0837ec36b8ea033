"""Media files as datasets ship them: every image mode and container, EXIF orientations, and audio in
wav/flac/ogg/mp3 at any rate, channel count and sample format, through the encoders' checked loaders."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmrwkv.encoders.media import load_audio, load_image


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make, fmt, pixel",
    [
        (lambda: Image.new("RGB", (6, 4), (10, 200, 30)), "JPEG", (10, 200, 30)),
        (lambda: Image.new("CMYK", (6, 4), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        (lambda: Image.new("L", (6, 4), 100), "PNG", (100, 100, 100)),
        (lambda: Image.new("L", (6, 4), 100), "JPEG", (100, 100, 100)),
        (lambda: Image.new("LA", (6, 4), (100, 0)), "PNG", (255, 255, 255)),
        (lambda: Image.new("LA", (6, 4), (100, 255)), "PNG", (100, 100, 100)),
        (lambda: Image.new("1", (6, 4), 1), "PNG", (255, 255, 255)),
        (lambda: Image.new("RGB", (6, 4), (0, 0, 255)).convert("P"), "PNG", (0, 0, 255)),
        (lambda: Image.new("RGB", (6, 4), (0, 0, 255)).convert("P"), "GIF", (0, 0, 255)),
        (lambda: Image.new("RGBA", (6, 4), (255, 0, 0, 0)), "PNG", (255, 255, 255)),
        (lambda: Image.new("RGBA", (6, 4), (255, 0, 0, 255)), "PNG", (255, 0, 0)),
        (lambda: Image.new("RGBA", (6, 4), (0, 0, 0, 128)), "WEBP", (127, 127, 127)),
        (lambda: Image.fromarray(np.full((4, 6), 65535, np.uint16)), "PNG", (255, 255, 255)),
        (lambda: Image.fromarray(np.full((4, 6), 32896, np.uint16)), "PNG", (128, 128, 128)),
        (lambda: Image.fromarray(np.full((4, 6), 32896, np.uint16)), "TIFF", (128, 128, 128)),
        (lambda: Image.new("RGB", (6, 4), (10, 200, 30)), "BMP", (10, 200, 30)),
    ],
)
def test_every_mode_loads_as_8_bit_rgb(make, fmt, pixel):
    img = load_image(_encode(make(), fmt))
    assert img.mode == "RGB" and img.size == (6, 4)
    got = img.getpixel((2, 2))
    assert all(abs(a - b) <= 2 for a, b in zip(got, pixel, strict=True)), (got, pixel)


def _marked() -> Image.Image:
    """A 6x4 image, red with one blue pixel at the top-left corner."""
    img = Image.new("RGB", (6, 4), (255, 0, 0))
    img.putpixel((0, 0), (0, 0, 255))
    return img


# EXIF orientation -> the stored image that displays as _marked() under it
_STORED = {
    1: lambda im: im,
    2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    3: lambda im: im.transpose(Image.Transpose.ROTATE_180),
    4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    6: lambda im: im.transpose(Image.Transpose.ROTATE_90),
    7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),
    8: lambda im: im.transpose(Image.Transpose.ROTATE_270),
}


@pytest.mark.parametrize("orientation", sorted(_STORED))
def test_exif_orientation_is_applied(orientation, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo-{orientation}.png"
    _STORED[orientation](_marked()).save(path, exif=exif.tobytes())
    img = load_image(path)
    assert img.size == (6, 4)
    assert img.getpixel((0, 0)) == (0, 0, 255) and img.getpixel((5, 3)) == (255, 0, 0)


def test_exif_rotated_jpeg_from_a_camera(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "IMG_0001.JPG"
    Image.new("RGB", (64, 32), (0, 0, 255)).save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    img = load_image(path)
    assert img.size == (32, 64) and img.mode == "RGB"


def test_phone_camera_mpo_jpeg_loads_its_first_frame():
    frames = [Image.new("RGB", (6, 4), (255, 0, 0)), Image.new("RGB", (6, 4), (0, 255, 0))]
    data = _encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    img = load_image(data)
    assert img.mode == "RGB" and img.getpixel((3, 2))[0] > 240


def _tone(rate: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize(
    "fmt, subtype, suffix, rate, channels",
    [
        ("WAV", "PCM_16", "wav", 44100, 2),
        ("WAV", "PCM_24", "wav", 48000, 1),
        ("WAV", "PCM_32", "wav", 32000, 1),
        ("WAV", "FLOAT", "wav", 22050, 6),
        ("WAV", "PCM_U8", "wav", 8000, 1),
        ("FLAC", "PCM_16", "flac", 44100, 2),
        ("FLAC", "PCM_24", "flac", 96000, 1),
        ("OGG", "VORBIS", "ogg", 22050, 2),
        ("MP3", "MPEG_LAYER_III", "mp3", 44100, 2),
        ("MP3", "MPEG_LAYER_III", "mp3", 16000, 1),
    ],
)
def test_audio_files_load_mono_at_16k_with_the_channel_mean(tmp_path, fmt, subtype, suffix, rate, channels):
    path = tmp_path / f"clip.{suffix}"
    data = _tone(rate, 1.0, channels)
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    wave = load_audio(path, sample_rate=16000)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    # lossy codecs pad a few milliseconds
    assert abs(wave.numel() - 16000) <= 0.06 * 16000
    expected_peak = 0.5 * np.mean([(c + 1) / channels for c in range(channels)])
    assert abs(float(wave.abs().max()) - expected_peak) < 0.06 * expected_peak + 0.02


def test_resampled_tone_keeps_its_pitch(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(44100, 1.0, 1), 44100, subtype="PCM_16")
    wave = load_audio(path, sample_rate=16000).numpy()
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / wave.size - 440) < 3


@pytest.mark.parametrize("samples", [160, 200, 401, 16000])
def test_short_clips_encode_down_to_one_frame(samples):
    from mmrwkv.encoders import registry

    encoder = registry.build("tiny_whisper", n_mels=80, width=32, depth=1, heads=2).eval()
    wave = (0.1 * np.sin(np.arange(samples) / 3)).astype(np.float32)
    features = encoder.preprocess((wave, 16000))
    assert features.shape[-1] == samples // 160 and torch.isfinite(features).all()
    with torch.no_grad():
        assert torch.isfinite(encoder(encoder.collate([features]))).all()
