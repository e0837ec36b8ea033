"""`tiny_whisper`: a small Whisper-style audio encoder for from-scratch work on CPU.

log-mel (M, F) [+ pitch track (2, F) with pitch=True] -> conv(k3) + GELU -> conv(k3, stride 2) + GELU
-> + sinusoidal positions -> pre-norm transformer -> LayerNorm. Padding in a batch is masked (frames zeroed between
convs, keys masked in attention), so a padded batch gives each item the tokens it gets alone.

Notation: B batch, M mel bins, P = M (+ 2 with pitch), F frames (100 per second), N = ceil(F / 2) tokens (50 per
second), D width.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mmrwkv.encoders.audio.frontend import LogMel, pitch_track
from mmrwkv.encoders.base import AudioEncoder, transformer_encoder, zero_padding
from mmrwkv.encoders.registry import register
from mmrwkv.errors import ConfigError, MediaError


def sinusoids(length: int, channels: int, device=None) -> torch.Tensor:
    """(length, channels) fixed sinusoidal positions (Whisper encoder convention)."""
    half = channels // 2
    inv = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, device=device, dtype=torch.float32))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv[None, :]  # (length, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@register("tiny_whisper")
class TinyWhisper(AudioEncoder):
    """Whisper-style conv stem (2x downsampling) + transformer over log-mel frames.

    `pitch=True` appends two feature rows per frame (`frontend.pitch_track`: dominant band and its slope). The
    plain stem could not learn pitch direction or comparisons on generated clips (encoder-only probe: chirp up/down
    0.54, second tone higher/lower 0.64, while order and counts reached 0.99+); with the rows up/down reached 0.92.
    """

    def __init__(
        self,
        *,
        n_mels: int = 80,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        sample_rate: int = 16000,
        max_seconds: float = 30.0,
        truncate: bool = False,
        pitch: bool = False,
    ):
        super().__init__(sample_rate=sample_rate, max_seconds=max_seconds, truncate=truncate)
        if width % heads or width % 2 or width < 4:
            raise ConfigError(f"tiny_whisper: width {width} must be even, >= 4 and divisible by heads {heads}")
        self.front = LogMel(sample_rate=sample_rate, n_mels=n_mels)
        self.n_mels, self.pitch = n_mels, pitch
        self.channels = n_mels + (2 if pitch else 0)
        self.conv1 = nn.Conv1d(self.channels, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.blocks = transformer_encoder(width, heads, depth)
        self.ln_post = nn.LayerNorm(width)
        self.out_dim = width

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """(S,) waveform -> (P, F): log-mel, then the pitch track rows when `pitch`."""
        if self.front.num_frames(wave.shape[-1]) < 1:
            raise MediaError(
                f"audio clip of {wave.shape[-1]} samples is too short: at least {self.front.hop_length} are needed"
            )
        mel = self.front(wave)  # (M, F)
        return torch.cat([mel, pitch_track(mel)]) if self.pitch else mel

    def num_tokens(self, preprocessed: torch.Tensor) -> int:
        """ceil(F / 2) tokens for F frames."""
        return (preprocessed.shape[-1] + 1) // 2

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, P + 1, F) collated (or (B, P, F) unpadded) -> (B, N, D); padded tokens are zero."""
        mel, lengths = self.split_batch(batch, self.channels)
        frame_mask = (torch.arange(mel.shape[-1], device=mel.device)[None, :] < lengths[:, None]).to(mel.dtype)
        # zero the padded frames so the strided conv sees what single-item zero padding would give
        x = F.gelu(self.conv1(mel)) * frame_mask[:, None, :]  # (B, D, F)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, N, D)
        counts = (lengths + 1) // 2
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= counts[:, None]  # (B, N) True = padding
        x = x + sinusoids(x.shape[1], x.shape[2], device=x.device).to(x.dtype)
        x = self.ln_post(self.blocks(x, src_key_padding_mask=pad if pad.any() else None))
        return zero_padding(x, counts)
