"""Media encoders: a registry of image / audio encoders with their preprocessing, projectors, media loading.

enc = build("tiny_cnn", image_size=64)          # or "open_clip", "torchvision", "tiny_vit", "tiny_whisper", ...
x = enc.collate([enc.preprocess("cat.png")])    # (B, 3, 64, 64)
feats = enc(x)                                  # (B, N, D) with N = enc.num_tokens(x[0]), D = enc.out_dim
"""

from mmrwkv.encoders.base import AudioEncoder, Encoder, ImageEncoder, ImagePreprocess
from mmrwkv.encoders.media import load_audio, load_image
from mmrwkv.encoders.projector import Projector, build_projector
from mmrwkv.encoders.registry import build, get_encoder_class, list_encoders, register
from mmrwkv.lora import set_trainable

__all__ = [
    "AudioEncoder",
    "Encoder",
    "ImageEncoder",
    "ImagePreprocess",
    "Projector",
    "build",
    "build_projector",
    "get_encoder_class",
    "list_encoders",
    "load_audio",
    "load_image",
    "register",
    "set_trainable",
]
