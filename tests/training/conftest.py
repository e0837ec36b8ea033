"""Tiny overrides that turn the default easy-VQA recipe into a seconds-long CPU run."""

import pytest

RECIPE = "recipes/easy_vqa.yaml"


def tiny_overrides(out_dir, **extra) -> list[str]:
    """Overrides for a 1-layer 32-wide model, a 16-pixel CNN and 48 training questions."""
    base = {
        "model.overrides": "{n_layer: 1, n_embd: 32, head_size: 16}",
        "model.bpe_vocab_size": 300,
        "encoders.image": "{name: tiny_cnn, image_size: 16, width: 8, grid: 2}",
        "data.sizes": "{train: 48, test: 12}",
        # 48 questions cover only a few images: keep one question per sample
        "data.group_by_media": "false",
        "train.batch_size": 4,
        "train.warmup_steps": 2,
        "train.checkpoint_every": 0,
        "train.log_every": 1,
        "train.output_dir": str(out_dir),
        "eval.max_samples": 12,
        # no validation rounds (test_training_validation_run turns them on)
        "data.val_split": "null",
        "eval.batch_size": 4,
        # one stage: the default recipe's curriculum stages set their own step counts
        "stages": "[]",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny():
    return tiny_overrides
