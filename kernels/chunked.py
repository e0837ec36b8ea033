"""Chunk-parallel WKV (placeholder: delegates to the reference loop until the chunked forms land)."""

from mmrwkv.kernels.reference import wkv4, wkv6, wkv7

__all__ = ["wkv4", "wkv6", "wkv7"]
