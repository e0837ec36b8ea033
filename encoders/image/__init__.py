"""Image encoders: `open_clip`, `hf_vision`, `torchvision`, `tiny_cnn`, `tiny_vit` (registered on import)."""
