"""The RWKV family (v4, v5, v6, v7) behind one model API; see docs/ARCHITECTURE.md "Model"."""

from mmrwkv.rwkv.config import SIZES, RWKVConfig, config_for
from mmrwkv.rwkv.model import RWKV
from mmrwkv.rwkv.state import RWKV4State, RWKV5State, RWKV6State, RWKV7State, State

__all__ = [
    "RWKV",
    "RWKVConfig",
    "SIZES",
    "config_for",
    "State",
    "RWKV4State",
    "RWKV5State",
    "RWKV6State",
    "RWKV7State",
]
