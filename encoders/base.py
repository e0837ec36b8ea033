"""The Encoder contract and the image / audio base classes that carry their preprocessing constants.

Notation: B batch, N tokens per item, D feature width (`out_dim`), C input channels, T input frames / samples.
Audio batches are padded to the longest item and carry a validity mask as one extra channel, so `forward` can
mask the padding: row i of a batch, first `num_tokens(item_i)` tokens, equals encoding item i alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmrwkv.encoders.media import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SECONDS, load_audio, load_image
from mmrwkv.errors import ConfigError, MediaError

_INTERPOLATION = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
RESIZE_MODES = ("shortest", "crop", "pad", "squash", "longest")


class Encoder(nn.Module):
    """An image or audio encoder: item -> preprocess -> collate -> forward -> (B, N, D) features."""

    modality: str = ""
    out_dim: int = 0

    def preprocess(self, item) -> torch.Tensor:
        """Load and transform one item into the tensor `collate` batches."""
        raise NotImplementedError

    def num_tokens(self, preprocessed: torch.Tensor) -> int:
        """Tokens this preprocessed item yields in `forward`'s output."""
        raise NotImplementedError

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        """Batch preprocessed items."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> Encoder:
        """Like nn.Module.train, but a fully frozen encoder stays in eval mode.

        Frozen means fixed: BatchNorm running statistics and dropout must not change it while the rest of a
        multimodal model trains.
        """
        frozen = not any(p.requires_grad for p in self.parameters())
        return super().train(mode and not frozen)


@dataclass(frozen=True)
class ImagePreprocess:
    """Image preprocessing constants that travel with an encoder (open_clip style)."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    # "shortest" (alias "crop"): resize the short side then center-crop; "squash": resize both sides ignoring aspect
    # ratio; "pad": pad to a square of the mean colour, then resize (LLaVA-1.5's expand2square); "longest": resize
    # the long side, then pad the rest black (open_clip's resize_mode "longest")
    resize_mode: str = "shortest"

    def __post_init__(self):
        if self.interpolation not in _INTERPOLATION:
            raise ConfigError(f"image interpolation {self.interpolation!r}: use one of {sorted(_INTERPOLATION)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"image resize {self.resize_mode!r}: use one of {', '.join(RESIZE_MODES)}")

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalized (3, H, W) float tensor."""
        height, width = self.size
        resample = _INTERPOLATION[self.interpolation]
        mode = self.resize_mode
        if mode == "pad":
            side = max(img.width, img.height)
            fill = tuple(round(255 * m) for m in self.mean)
            square = Image.new("RGB", (side, side), fill)
            square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
            img = square.resize((width, height), resample)
        elif mode == "longest":
            scale = min(height / img.height, width / img.width)
            new_w, new_h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
            canvas = Image.new("RGB", (width, height), (0, 0, 0))
            canvas.paste(img.resize((new_w, new_h), resample), ((width - new_w) // 2, (height - new_h) // 2))
            img = canvas
        elif mode == "squash":
            img = img.resize((width, height), resample)
        else:
            scale = max(height / img.height, width / img.width)
            new_w, new_h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
            img = img.resize((new_w, new_h), resample)
            left, top = (new_w - width) // 2, (new_h - height) // 2
            img = img.crop((left, top, left + width, top + height))
        # (H, W, 3) uint8 -> (3, H, W) float in [0, 1]
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std


def as_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An image size given as an int or (height, width) -> (height, width)."""
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ConfigError(f"image size {size!r}: expected an int or (height, width)")
    return (int(size[0]), int(size[1]))


class ImageEncoder(Encoder):
    """Base for image encoders: fixed tokens per image, preprocessing from `self.image_preprocess`."""

    modality = "image"

    def __init__(self, image_preprocess: ImagePreprocess, *, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__()
        self.image_preprocess = image_preprocess
        self.max_pixels = max_pixels
        self.tokens_per_image = 0

    def preprocess(self, item) -> torch.Tensor:
        """Path / bytes / PIL image -> normalized (3, H, W) tensor."""
        return self.image_preprocess(load_image(item, max_pixels=self.max_pixels))

    def num_tokens(self, preprocessed: torch.Tensor) -> int:
        """Every image yields the same number of tokens."""
        return self.tokens_per_image

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        """Stack (3, H, W) items into (B, 3, H, W)."""
        expected = (3, *self.image_preprocess.size)
        for i, item in enumerate(items):
            if tuple(item.shape) != expected:
                raise MediaError(f"image item {i}: preprocessed shape {tuple(item.shape)}, expected {expected}")
        return torch.stack(items)


class AudioEncoder(Encoder):
    """Base for audio encoders: waveform at `sample_rate` -> `features(wave)` (C, T) -> padded masked batch."""

    modality = "audio"

    def __init__(self, *, sample_rate: int, max_seconds: float = DEFAULT_MAX_SECONDS, truncate: bool = False):
        super().__init__()
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.truncate = truncate

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono (S,) waveform -> (C, T) input features."""
        raise NotImplementedError

    def preprocess(self, item) -> torch.Tensor:
        """Path / bytes / (waveform, sample_rate) -> (C, T) input features."""
        wave = load_audio(item, sample_rate=self.sample_rate, max_seconds=self.max_seconds, truncate=self.truncate)
        return self.features(wave)

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        """(C, T_i) items -> (B, C + 1, T_max): zero-padded features plus a last channel of 1 (valid) / 0 (pad)."""
        if not items:
            raise MediaError("audio collate: empty list of items")
        channels = items[0].shape[0]
        longest = max(item.shape[-1] for item in items)
        batch = items[0].new_zeros(len(items), channels + 1, longest)
        for i, item in enumerate(items):
            if item.dim() != 2 or item.shape[0] != channels:
                raise MediaError(f"audio item {i}: preprocessed shape {tuple(item.shape)}, expected ({channels}, T)")
            batch[i, :channels, : item.shape[-1]] = item
            batch[i, channels, : item.shape[-1]] = 1.0
        return batch

    def split_batch(self, batch: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C + 1, T) collated or (B, C, T) unpadded batch -> ((B, C, T) features, (B,) long lengths)."""
        if batch.dim() != 3 or batch.shape[1] not in (channels, channels + 1):
            raise MediaError(f"audio batch shape {tuple(batch.shape)}: expected (B, {channels} or {channels + 1}, T)")
        if batch.shape[1] == channels:
            lengths = torch.full((batch.shape[0],), batch.shape[-1], dtype=torch.long, device=batch.device)
            return batch, lengths
        return batch[:, :channels], batch[:, channels].sum(dim=-1).round().long()


def zero_padding(tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Zero the tokens past each item's count: (B, N, D), (B,) -> (B, N, D)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    keep = positions[None, :] < counts[:, None]
    return tokens * keep[..., None].to(tokens.dtype)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.gelu(x)


def transformer_encoder(width: int, heads: int, depth: int) -> nn.TransformerEncoder:
    """A pre-norm GELU transformer stack (batch first, no dropout).

    The activation is a plain function on purpose: it keeps PyTorch's fused inference fast path off, which
    reads the Linear weights directly and would silently skip LoRA adapters on them.
    """
    layer = nn.TransformerEncoderLayer(
        width, heads, 4 * width, dropout=0.0, activation=_gelu, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
