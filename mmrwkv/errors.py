"""Exception types. Every message names the file, field or value and the problem."""

from __future__ import annotations


class MMRWKVError(Exception):
    """Base class of all errors raised on bad input."""


class CheckpointError(MMRWKVError):
    """A checkpoint file is missing, truncated, unsafe or does not fit the model."""


class ConfigError(MMRWKVError):
    """A recipe or model config has an unknown key, a wrong type or a bad value."""


class MediaError(MMRWKVError):
    """An image or audio input cannot be read or breaks a limit."""


class DataError(MMRWKVError):
    """A dataset file or record is missing or malformed."""


class TokenizerError(MMRWKVError):
    """A tokenizer file is missing or malformed, or a text cannot be tokenized."""
