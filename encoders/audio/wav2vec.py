"""torchaudio's wav2vec 2.0 / HuBERT / WavLM architectures as audio token encoders (`wav2vec2`, `hubert`).

Input is the raw 16 kHz waveform; tokens are the outputs of transformer layer `layer` (default the last), one per
20 ms. Weights: random init or a local file holding the torchaudio model's state_dict (`weights=PATH`).
Padding in a batch is passed to torchaudio as lengths (attention is masked); the group-norm feature extractor
of the *_base models still normalizes over the padded length, so those models match single-item encoding only
for equal-length items (as in the original models).

Notation: B batch, S samples, N tokens, D width.
"""

from __future__ import annotations

import os

import torch

from mmrwkv.encoders.base import AudioEncoder, zero_padding
from mmrwkv.encoders.registry import register
from mmrwkv.encoders.weights import load_strict, read_state_dict, skip_weight_files
from mmrwkv.errors import ConfigError, MediaError

ARCHS = (
    "wav2vec2_base",
    "wav2vec2_large",
    "wav2vec2_large_lv60k",
    "wav2vec2_xlsr_300m",
    "wav2vec2_xlsr_1b",
    "wav2vec2_xlsr_2b",
    "hubert_base",
    "hubert_large",
    "hubert_xlarge",
    "wavlm_base",
    "wavlm_large",
)


@register("wav2vec2")
class Wav2Vec2Encoder(AudioEncoder):
    """A torchaudio Wav2Vec2Model (any of ARCHS, or `config=` for torchaudio.models.wav2vec2_model) cut at `layer`."""

    def __init__(
        self,
        *,
        arch: str = "wav2vec2_base",
        config: dict | None = None,
        weights: str | os.PathLike | None = None,
        layer: int = -1,
        normalize: bool = False,
        sample_rate: int = 16000,
        max_seconds: float = 30.0,
        truncate: bool = False,
    ):
        super().__init__(sample_rate=sample_rate, max_seconds=max_seconds, truncate=truncate)
        model = _create(arch, config)
        if weights is not None and not skip_weight_files():  # a saved checkpoint holds the weights
            load_strict(model, read_state_dict(weights), weights)
        layers = model.encoder.transformer.layers
        index = layer + len(layers) if layer < 0 else layer
        if not 0 <= index < len(layers):
            raise ConfigError(f"{arch}: layer {layer} is out of range ({len(layers)} layers: 0..{len(layers) - 1})")
        # layers after `index` and the CTC head are never used: drop their parameters
        del layers[index + 1 :]
        model.aux = None
        self.model = model
        self.n_layers = index + 1
        self.normalize = normalize
        self.out_dim = model.encoder.feature_projection.projection.out_features
        self.conv_shapes = [(c.conv.kernel_size[0], c.conv.stride[0]) for c in model.feature_extractor.conv_layers]

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """(S,) waveform -> (1, S), zero-mean unit-variance when `normalize` (as the *_large_lv60k models expect)."""
        if self._tokens_for(wave.shape[-1]) < 1:
            raise MediaError(f"audio clip of {wave.shape[-1]} samples is too short for the {self.conv_shapes} convs")
        if self.normalize:
            wave = (wave - wave.mean()) / (wave.std() + 1e-7)
        return wave[None, :]

    def _tokens_for(self, n_samples: int) -> int:
        length = n_samples
        for kernel, stride in self.conv_shapes:
            length = (length - kernel) // stride + 1
        return max(length, 0)

    def num_tokens(self, preprocessed: torch.Tensor) -> int:
        """Tokens after the strided conv feature extractor (about 50 per second at 16 kHz)."""
        return self._tokens_for(preprocessed.shape[-1])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 2, S) collated (or (B, 1, S) unpadded) -> (B, N, D); padded tokens are zero."""
        wave, lengths = self.split_batch(batch, 1)
        padded = bool((lengths < wave.shape[-1]).any())
        outputs, out_lengths = self.model.extract_features(wave[:, 0], lengths if padded else None, self.n_layers)
        tokens = outputs[-1]  # (B, N, D)
        return zero_padding(tokens, out_lengths) if padded else tokens


@register("hubert")
class HubertEncoder(Wav2Vec2Encoder):
    """The same encoder with HuBERT Base as the default architecture."""

    def __init__(self, *, arch: str = "hubert_base", **kwargs):
        super().__init__(arch=arch, **kwargs)


def _create(arch: str, config: dict | None):
    import torchaudio

    if config is not None:
        try:
            return torchaudio.models.wav2vec2_model(**{"aux_num_out": None, **config})
        except TypeError as err:
            raise ConfigError(f"wav2vec2 config {config}: {err}") from None
    if arch not in ARCHS:
        raise ConfigError(f"wav2vec2: unknown arch {arch!r}; known: {', '.join(ARCHS)} (or pass config=)")
    return getattr(torchaudio.models, arch)()
