"""Registry: built-in names, unknown / duplicate names and bad arguments raise listing what is valid."""

import pytest
import torch

from mmrwkv.encoders import Encoder, build, list_encoders, register
from mmrwkv.errors import ConfigError


def test_builtin_encoders_are_listed():
    names = list_encoders()
    for name in ("open_clip", "torchvision", "tiny_cnn", "tiny_vit", "tiny_whisper", "wav2vec2", "hubert"):
        assert name in names
    assert names == sorted(names)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown encoder 'nope'.*tiny_cnn"):
        build("nope")


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"tiny_cnn.*valid arguments: .*image_size"):
        build("tiny_cnn", imag_size=32)


def test_register_then_build_a_user_encoder():
    @register("test_registry_constant")
    class Constant(Encoder):
        modality = "image"
        out_dim = 3

        def __init__(self, *, n: int = 2):
            super().__init__()
            self.n = n

        def forward(self, batch):
            return torch.zeros(batch.shape[0], self.n, self.out_dim)

    enc = build("test_registry_constant", n=5)
    assert isinstance(enc, Constant) and enc(torch.zeros(2, 1)).shape == (2, 5, 3)
    assert "test_registry_constant" in list_encoders()


def test_duplicate_name_raises_listing_known():
    with pytest.raises(ConfigError, match=r"'tiny_cnn' is already registered.*known encoders: .*tiny_vit"):

        @register("tiny_cnn")
        class Other(Encoder):
            pass


def test_arguments_passed_through_kwargs_to_a_parent_are_checked():
    # hubert forwards **kwargs to the wav2vec2 encoder: its arguments count, others are refused
    with pytest.raises(ConfigError, match=r"unknown arguments \['layers'\].*arch, .*layer"):
        build("hubert", layers=3)
