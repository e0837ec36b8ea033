"""mmrwkv: multimodal experimentation with an RWKV backbone."""

__version__ = "0.1.0"
