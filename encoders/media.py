"""Checked loading of images and audio clips: every bad input becomes a MediaError naming the source and problem.

Images come back as 8-bit RGB PIL images; audio as a mono float32 waveform at the requested sample rate.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mmrwkv import limits
from mmrwkv.errors import MediaError

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_SECONDS = 30.0
# MPO: the multi-picture JPEG many phone cameras write (the first frame is the photo)
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "GIF", "BMP", "WEBP", "TIFF", "PPM", "TGA"})
_AUDIO_FORMATS_HINT = "wav, flac, ogg, mp3"

ImageSource = str | os.PathLike | bytes | Image.Image
AudioSource = str | os.PathLike | bytes | tuple


def _describe(src) -> str:
    if isinstance(src, bytes | bytearray):
        return f"<{len(src)} bytes>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.mode} {src.size[0]}x{src.size[1]}>"
    if isinstance(src, tuple):
        return "<waveform>"
    return str(src)


def _read_source(src, what: str) -> tuple[bytes | str, str]:
    """Check a path or bytes source exists and is non-empty; return (path or bytes, display name)."""
    name = _describe(src)
    if isinstance(src, bytes | bytearray):
        if len(src) == 0:
            raise MediaError(f"{what} {name}: empty input (0 bytes)")
        return bytes(src), name
    if not isinstance(src, str | os.PathLike):
        raise MediaError(f"{what} source must be a path or bytes, got {type(src).__name__}")
    path = Path(src)
    if not path.is_file():
        raise MediaError(f"{what} file {name}: does not exist or is not a file")
    if path.stat().st_size == 0:
        raise MediaError(f"{what} file {name}: empty file (0 bytes)")
    return str(path), name


def load_image(src: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load an image file / bytes / PIL image as 8-bit RGB, refusing corrupt, unsupported and oversized input.

    The pixel limit is checked from the header before any pixel data is decoded (decompression bombs).
    Transparency is composited onto white; 16-bit and float images are rescaled, not clipped.
    """
    if isinstance(src, Image.Image):
        _check_pixels(src, _describe(src), max_pixels)
        return to_rgb(src)
    data, name = _read_source(src, "image")
    img = _open_image(data, name)
    try:
        _check_pixels(img, name, max_pixels)
        _decode(img, name)
    except MediaError:
        img.close()
        raise
    return to_rgb(ImageOps.exif_transpose(img) or img)


def _decode(img: Image.Image, name: str) -> None:
    try:
        img.load()
    except Image.DecompressionBombError as err:
        raise MediaError(f"image {name}: over the pixel limit ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise MediaError(f"image {name}: corrupt or truncated image data ({err})") from None


def _open_image(data: bytes | str, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise MediaError(f"image {name}: over the pixel limit, refused before decoding ({err})") from None
    except UnidentifiedImageError:
        raise MediaError(
            f"image {name}: not a recognised image (corrupt, or an unsupported format); "
            f"supported: {', '.join(sorted(IMAGE_FORMATS))}"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise MediaError(f"image {name}: corrupt image header ({err})") from None
    if img.format not in IMAGE_FORMATS:
        img.close()
        raise MediaError(
            f"image {name}: unsupported format {img.format}; supported: {', '.join(sorted(IMAGE_FORMATS))}"
        )
    return img


def _check_pixels(img: Image.Image, name: str, max_pixels: int) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise MediaError(f"image {name}: empty image ({width}x{height})")
    if width * height > max_pixels:
        raise MediaError(f"image {name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha over white, 16-bit/32-bit/float rescaled to 0..255."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img), mode)).convert("RGB")
    if mode == "P":
        if "transparency" not in img.info:
            return img.convert("RGB")
        img = img.convert("RGBA")
    if "A" in img.mode or img.mode.endswith("a"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Rescale a high-bit-depth grayscale array to uint8 (16-bit: full range 0..65535; float: 0..1)."""
    values = array.astype(np.float64)
    if mode == "F":
        top = 1.0 if np.nanmax(values, initial=0.0) <= 1.0 else 255.0
    else:
        # "I" holds 16-bit PNG/TIFF data in older Pillow; 8-bit data in "I" would be rare and stays dark-safe
        top = 65535.0
    scaled = np.clip(np.nan_to_num(values) / top, 0.0, 1.0) * 255.0
    return np.round(scaled).astype(np.uint8)


def load_audio(
    src: AudioSource,
    *,
    sample_rate: int = 16000,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    truncate: bool = False,
) -> torch.Tensor:
    """Load an audio file / bytes / (waveform, sample_rate) as a mono float32 (S,) waveform at `sample_rate`.

    Refuses empty, corrupt, unsupported, silent (all-zero) and NaN/inf audio, clips longer than `max_seconds`
    unless `truncate=True` (then the first `max_seconds` are kept), and sample rates outside the limits
    (`mmrwkv.limits`), all checked from the header before the samples are decoded. Resampling goes through a
    ratio of small integers within 0.01 % of the true one (`limits.resample_ratio`): an odd rate such as
    48001 Hz costs what 48000 Hz does.
    """
    if isinstance(src, tuple):
        wave, rate, name = *_from_tuple(src), "<waveform>"
        limits.check_audio_rate(rate, name)
    else:
        data, name = _read_source(src, "audio")
        wave, rate = _read_sound(data, name, max_seconds, truncate)
    wave = _check_wave(wave, rate, name, max_seconds, truncate)
    up, down = limits.resample_ratio(rate, sample_rate)
    if up != down:
        import torchaudio.functional as AF

        wave = AF.resample(wave, up, down)
    return wave.contiguous()


def _from_tuple(src: tuple) -> tuple[torch.Tensor, int]:
    if len(src) != 2:
        raise MediaError(f"audio tuple must be (waveform, sample_rate), got {len(src)} items")
    wave, rate = src
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise MediaError(f"audio <waveform>: sample_rate must be a positive int, got {rate!r}")
    wave = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave)
    if wave.dim() not in (1, 2) or not (wave.is_floating_point() or wave.dtype in (torch.int16, torch.int32)):
        raise MediaError(
            f"audio <waveform>: expected a float (S,) or (channels, S) waveform, got {tuple(wave.shape)} {wave.dtype}"
        )
    if not wave.is_floating_point():
        wave = wave.float() / float(torch.iinfo(wave.dtype).max)
    # torchaudio convention: channels first
    wave = wave.float() if wave.dim() == 1 else wave.float().mean(dim=0)
    return wave, rate


def _read_sound(data: bytes | str, name: str, max_seconds: float, truncate: bool) -> tuple[torch.Tensor, int]:
    import soundfile as sf

    def handle():
        return io.BytesIO(data) if isinstance(data, bytes) else data

    try:
        info = sf.info(handle())
        # rate, size and duration are checked from the header before decoding the samples
        limits.check_audio_rate(info.samplerate, name)
        if info.channels <= 0 or min(info.frames, math.ceil(max_seconds * info.samplerate)) * info.channels > (
            limits.MAX_AUDIO_SAMPLES
        ):
            raise MediaError(
                f"audio {name}: {info.frames} frames x {info.channels} channels is over the limit of "
                f"{limits.MAX_AUDIO_SAMPLES} samples"
            )
        if info.frames / info.samplerate > max_seconds and not truncate:
            raise MediaError(
                f"audio {name}: {info.frames / info.samplerate:.2f} s is over the limit of {max_seconds} s "
                "(pass truncate=True to keep the start)"
            )
        limit = math.floor(max_seconds * info.samplerate) if truncate else -1
        samples, rate = sf.read(handle(), dtype="float32", always_2d=True, frames=limit)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise MediaError(
            f"audio {name}: corrupt audio or an unsupported format ({_AUDIO_FORMATS_HINT} via libsndfile): {err}"
        ) from None
    # (S, channels) -> mono (S,)
    return torch.from_numpy(samples).mean(dim=1), int(rate)


def _check_wave(wave: torch.Tensor, rate: int, name: str, max_seconds: float, truncate: bool) -> torch.Tensor:
    if wave.numel() == 0:
        raise MediaError(f"audio {name}: no samples (empty clip)")
    if not torch.isfinite(wave).all():
        raise MediaError(f"audio {name}: contains NaN or infinite samples")
    limit = math.floor(max_seconds * rate)
    if wave.numel() > limit:
        if not truncate:
            raise MediaError(
                f"audio {name}: {wave.numel() / rate:.2f} s is over the limit of {max_seconds} s "
                "(pass truncate=True to keep the start)"
            )
        wave = wave[:limit]
    if not wave.abs().max() > 0:
        raise MediaError(f"audio {name}: silent clip (all samples are zero)")
    return wave
