"""Image encoders: `open_clip`, `torchvision`, `tiny_cnn`, `tiny_vit` (registered on import)."""
