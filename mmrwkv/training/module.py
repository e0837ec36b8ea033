"""The LightningModule: masked next-token loss, parameter groups, warmup + cosine schedule.

Notation: B batch, T time, C channels, V vocabulary, M labelled positions in the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from mmrwkv.errors import MMRWKVError

IGNORE = -100


class NonFiniteLossError(MMRWKVError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class OptimSettings:
    """Learning rates per part (None: the backbone's), AdamW settings and the schedule length in optimizer steps."""

    lr: float = 1e-3
    lr_projector: float | None = None
    lr_encoder: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    # RWKV-LM trains with adam_eps 1e-18: weights whose gradients are tiny (the encoder behind ln0, or everything
    # after a large clip) still move at the learning rate instead of being frozen by eps
    eps: float = 1e-18
    warmup_steps: int = 0
    total_steps: int = 1000
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _decays(name: str, param: nn.Parameter) -> bool:
    # Only the big matrices get weight decay: vectors, norms, mixing coefficients and LoRA factors do not.
    return param.ndim >= 2 and name.endswith(".weight") and min(param.shape) > 1


_PARTS = {"projectors": "projector", "encoders": "encoder"}


def parameter_groups(model: nn.Module, settings: OptimSettings) -> list[dict]:
    """AdamW groups: (projector | encoder | backbone) x (decay | no decay), each with its own learning rate.

    Parts are found by attribute name (`projectors`, `encoders`, `backbone`); anything else counts as backbone.
    Frozen parameters (requires_grad False) are left out.
    """
    lrs = {
        "projector": settings.lr_projector if settings.lr_projector is not None else settings.lr,
        "encoder": settings.lr_encoder if settings.lr_encoder is not None else settings.lr,
        "backbone": settings.lr,
    }
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = _PARTS.get(name.split(".")[0], "backbone")
        buckets.setdefault((part, _decays(name, param)), []).append(param)
    groups = []
    for (part, decay), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": lrs[part],
                "weight_decay": settings.weight_decay if decay else 0.0,
                "name": f"{part}{'' if decay else '_nodecay'}",
            }
        )
    return groups


def masked_lm_loss(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of next-token prediction at labelled positions only.

    `labels` are aligned with the input ids (the label of position t is the token at t), so the hidden state
    at t predicts labels[t + 1]. Only the M labelled rows go through the head: with a large vocabulary the
    head is most of the cost of a small model.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE
    picked = hidden[:, :-1][mask]  # (M, C)
    logits = head(picked).float()  # (M, V)
    return F.cross_entropy(logits, targets[mask])


class MultimodalLM(L.LightningModule):
    """Thin training wrapper around a `MultimodalRWKV`: masked loss, parameter groups, schedule."""

    def __init__(self, model: nn.Module, settings: OptimSettings):
        super().__init__()
        self.model = model
        self.settings = settings
        self.last_loss: float | None = None

    def _loss(self, batch: dict) -> torch.Tensor:
        hidden, _ = self.model.forward_hidden(batch["input_ids"], batch.get("media"))
        return masked_lm_loss(hidden, self.model.backbone.head, batch["labels"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step} (batch {batch_idx}); "
                "stopping, the last good checkpoint is kept (lower train.lr or check the data)"
            )
        self.last_loss = float(loss.detach())
        labelled = (batch["labels"][:, 1:] != IGNORE).sum()
        self.log("train/loss", loss, prog_bar=True, batch_size=int(labelled))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        labelled = (batch["labels"][:, 1:] != IGNORE).sum()
        self.log("val/loss", self._loss(batch), prog_bar=True, batch_size=int(labelled), sync_dist=True)

    def configure_optimizers(self):
        s = self.settings
        groups = parameter_groups(self.model, s)
        if not groups:
            raise MMRWKVError("nothing to train: every parameter is frozen (check the recipe's train.freeze)")
        optimizer = torch.optim.AdamW(groups, betas=s.betas, eps=s.eps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, s.warmup_steps, s.total_steps, s.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
