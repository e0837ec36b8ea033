"""Log-mel front end (Whisper convention): 25 ms windows, 10 ms hop, log10, 8-decade floor, scaled to about [-1, 1].

Notation: S samples, M mel bins, F frames (= S // hop).
"""

from __future__ import annotations

import torch
from torch import nn

from mmrwkv.errors import ConfigError


class LogMel(nn.Module):
    """Mono (S,) waveform -> (M, F) normalized log-mel features; one frame per `hop_length` samples.

    The window and mel filterbank are non-persistent buffers (derived constants, kept out of checkpoints), and
    features are computed on the waveform's device, so preprocessing stays on the CPU when the encoder is on a GPU.
    """

    def __init__(self, *, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160):
        super().__init__()
        import torchaudio

        if n_mels not in (80, 128):
            raise ConfigError(f"log-mel n_mels={n_mels}: use 80 or 128 (the Whisper front ends)")
        self.n_mels, self.n_fft, self.hop_length = n_mels, n_fft, hop_length
        fbank = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("fbank", fbank, persistent=False)  # (n_fft // 2 + 1, M)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def num_frames(self, n_samples: int) -> int:
        """Frames for a clip of `n_samples` samples."""
        return n_samples // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(S,) -> (M, S // hop)."""
        window = self.window.to(wave.device)
        # reflect padding needs more than n_fft // 2 samples; a shorter clip (160..200 at 16 kHz) pads with zeros
        pad_mode = "reflect" if wave.shape[-1] > self.n_fft // 2 else "constant"
        spec = torch.stft(wave.float(), self.n_fft, self.hop_length, window=window, pad_mode=pad_mode,
                          return_complex=True)
        # the centred STFT yields S // hop + 1 frames; the last covers mostly padding (Whisper drops it too)
        power = spec[:, : self.num_frames(wave.shape[-1])].abs() ** 2  # (n_fft // 2 + 1, F)
        log = (self.fbank.to(wave.device).T @ power).clamp(min=1e-10).log10()  # (M, F)
        # keep 8 decades below the loudest bin, then map to roughly [-1, 1]
        log = torch.maximum(log, log.max() - 8.0)
        return (log + 4.0) / 4.0


def pitch_track(log_mel: torch.Tensor, *, sharpness: float = 6.0, delta_scale: float = 20.0) -> torch.Tensor:
    """(M, F) normalized log-mel -> (2, F): the dominant band per frame and its slope over time.

    Row 0 is the spectral centroid over the mel axis of softmax(sharpness * log-mel), mapped to [-1, 1] (low to
    high); row 1 its regression delta over +-2 frames (the filterbank-delta formula), times `delta_scale`.
    A Whisper-style stem reads mel bins as separate channels, so "the energy moved up" is a different pattern for
    every pair of bins; these two rows state pitch and its direction once for all bands, as pitch features
    appended to filterbanks do in speech front ends.
    """
    weights = (sharpness * log_mel).softmax(dim=0)  # (M, F)
    bands = torch.linspace(-1.0, 1.0, log_mel.shape[0], device=log_mel.device, dtype=log_mel.dtype)
    centroid = (weights * bands[:, None]).sum(dim=0)  # (F,)
    padded = torch.nn.functional.pad(centroid[None, None], (2, 2), mode="replicate")[0, 0]  # (F + 4,)
    n = centroid.shape[0]
    delta = (padded[3 : n + 3] - padded[1 : n + 1] + 2 * (padded[4 : n + 4] - padded[0:n])) / 10.0
    return torch.stack([centroid, delta_scale * delta])
