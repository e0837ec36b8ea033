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
from mmrwkv.names import IGNORE


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
    # weight of the bag-of-words loss on the media features (0: off); see `MultimodalLM`
    aux_bow: float = 0.0
    # weight of the language-model loss; 0 trains the media path on the bag-of-words loss alone (no backbone pass)
    lm_weight: float = 1.0
    # recompute each backbone block's activations in the backward pass
    grad_checkpoint: bool = False


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


def checkpoint_blocks(backbone: nn.Module) -> None:
    """Make every block of `backbone` recompute its activations in the backward pass (activation checkpointing
    per block): only the block inputs are kept. The blocks' parameters and state_dict keys stay as they are."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint

    def run(forward, *args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    for block in backbone.blocks:
        if not isinstance(block.forward, partial):
            block.forward = partial(run, block.forward)


def _bag_cross_entropy(head: nn.Module, pooled: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy between each row's bag (`counts` (R, V), every row non-empty, as a
    distribution) and the head's words on its pooled media tokens (R, C)."""
    target = counts / counts.sum(1, keepdim=True)
    logp = F.log_softmax(head(pooled).float(), dim=-1)
    return -(target * logp).sum(1).mean()


class MultimodalLM(L.LightningModule):
    """Thin training wrapper around a `MultimodalRWKV`: masked loss, parameter groups, schedule.

    With `settings.aux_bow` > 0, a linear head per trainable media modality predicts the bag of words of each
    sample's media (every reply and caption about them in the split, `media_bags`; a batch without those bags
    uses the row's own replies) from the mean of its projected media tokens, and that cross-entropy (times `aux_bow`) is
    added to the loss: a direct training signal for an encoder learned from scratch (visual features from text,
    Joulin et al. 2016), which otherwise learns only through the language model's readout of its tokens. The
    bag leaves out the ids of the turn end ("\n\n"), which every reply shares. With `settings.lm_weight` 0 the
    backbone is not run at all: a cheap warm-up stage for the encoders. The heads are training-only: the saved
    model does not contain them.
    """

    def __init__(self, model: nn.Module, settings: OptimSettings):
        super().__init__()
        self.model = model
        self.settings = settings
        self.last_loss: float | None = None
        self.last_parts: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.bow_heads = nn.ModuleDict()
        if settings.aux_bow > 0:
            width, vocab = model.backbone.config.n_embd, model.backbone.config.vocab_size
            for modality in model.encoders:
                parts = [*model.encoders[modality].parameters(), *model.projectors[modality].parameters()]
                if any(p.requires_grad for p in parts):
                    self.bow_heads[modality] = nn.Linear(width, vocab)
        if settings.lm_weight == 0 and not len(self.bow_heads):
            raise MMRWKVError("train.lm_weight 0 leaves nothing to train: it needs train.aux_bow > 0 and a trainable "
                              "encoder or projector")
        skip = model.tokenizer.encode("\n\n") if len(self.bow_heads) else []
        self.register_buffer("bow_skip", torch.tensor(sorted(set(skip)), dtype=torch.long), persistent=False)
        # over-long training samples this process cut or skipped so far (`data.overlong`)
        self.overlong = {"truncated": 0, "skipped": 0}
        if settings.grad_checkpoint:
            checkpoint_blocks(model.backbone)

    def _loss(self, batch: dict) -> torch.Tensor:
        """The training loss; its parts (language model, bag of words or None) are kept in `last_parts`."""
        lm, bow = self._losses(batch)
        self.last_parts = (lm, bow)
        s = self.settings
        parts = ([] if lm is None else [s.lm_weight * lm]) + ([] if bow is None else [s.aux_bow * bow])
        if not parts:  # lm_weight 0 and no row of this batch has both media and a reply
            return torch.zeros((), requires_grad=True)
        return torch.stack(parts).sum()

    def _losses(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(language-model loss or None when lm_weight is 0, bag-of-words loss or None)."""
        ids = batch["input_ids"]
        x = self.model.embed(ids, batch.get("media"))  # (B, T, C)
        lm = None
        if self.settings.lm_weight > 0:
            hidden, _ = self.model.backbone.forward_hidden(x)
            lm = masked_lm_loss(hidden, self.model.backbone.head, batch["labels"])
        if not len(self.bow_heads):
            return lm, None
        meta = batch.get("meta") or []
        if meta and all("item_bow" in m for m in meta):
            return lm, self._item_bow_loss(ids, x, batch["media"], meta)
        return lm, self._bow_loss(ids, x, self._bags(batch))

    def _bags(self, batch: dict) -> torch.Tensor:
        """(B, V) word counts of each row's bag: its media's bag from the data ("bow" in meta), else its replies."""
        labels = batch["labels"]
        counts = torch.zeros(labels.shape[0], self.model.backbone.config.vocab_size, device=labels.device)
        meta = batch.get("meta") or [{} for _ in range(labels.shape[0])]
        if all("bow" in m for m in meta):
            rows = [torch.full((len(m["bow"]),), b, dtype=torch.long) for b, m in enumerate(meta)]
            words = torch.tensor([i for m in meta for i in m["bow"]], dtype=torch.long)
            index = (torch.cat(rows).to(labels.device), words.to(labels.device))
        else:
            labelled = labels != IGNORE
            index = (labelled.nonzero()[:, 0], labels[labelled])
        counts.index_put_(index, torch.ones((), device=labels.device), accumulate=True)
        counts[:, self.bow_skip] = 0
        return counts

    def _bow_loss(self, ids: torch.Tensor, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor | None:
        """Mean over modalities of the cross-entropy between each row's bag (`counts`, (B, V)) and its media's head."""
        losses = []
        for modality, head in self.bow_heads.items():
            slots = ids == self.model.placeholder_ids[modality]  # (B, T)
            rows = slots.any(1) & (counts.sum(1) > 0)  # (B,)
            if not rows.any():
                continue
            n = slots[rows].sum(1, keepdim=True)  # (R, 1)
            pooled = (x[rows] * slots[rows].unsqueeze(-1)).sum(1) / n  # (R, C)
            losses.append(_bag_cross_entropy(head, pooled, counts[rows]))
        return torch.stack(losses).mean() if losses else None

    def _item_bow_loss(self, ids: torch.Tensor, x: torch.Tensor, media, meta: list[dict]) -> torch.Tensor | None:
        """Mean over media items with a bag of their own ("item_bow" in every row's meta: each window of a stream
        and what it holds) of the cross-entropy between that bag and the head on the mean of the item's own
        projected tokens: a target per item instead of one per row."""
        losses = []
        vocab = self.model.backbone.config.vocab_size
        for modality, head in self.bow_heads.items():
            items = media.get(modality)
            # the rows' item bags of this modality, in the order of the batch's items (rows, then media_key order)
            bags = [bag for m in meta for bag in (m["item_bow"][: len(m["images"])] if modality == "image"
                                                  else m["item_bow"][len(m["images"]):])]  # fmt: skip
            if not items:
                continue
            if len(bags) != len(items):
                raise MMRWKVError(f"bag-of-words loss: {len(bags)} {modality} item bags for {len(items)} items")
            feats = x[ids == self.model.placeholder_ids[modality]]  # (slots, C), item after item
            sizes = [self.model.tokens_per_item(modality, t) for t in items]
            pooled = torch.stack([f.mean(0) for f in feats.split(sizes)])  # (N, C)
            counts = torch.zeros(len(items), vocab, device=x.device)
            for i, bag in enumerate(bags):
                counts[i, bag] = 1.0
            counts[:, self.bow_skip] = 0
            keep = counts.sum(1) > 0
            if keep.any():
                losses.append(_bag_cross_entropy(head, pooled[keep], counts[keep]))
        return torch.stack(losses).mean() if losses else None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        for key, n in batch.get("overlong", {}).items():
            self.overlong[key] += n
        if batch["input_ids"] is None:  # every sample of the batch was over-long and skipped
            return None
        loss = self._loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step} (batch {batch_idx}); "
                "stopping, the last good checkpoint is kept (lower train.lr or check the data)"
            )
        lm, bow = self.last_parts
        main = lm if lm is not None else (bow if bow is not None else loss)
        self.last_loss = float(main.detach())
        labelled = (batch["labels"][:, 1:] != IGNORE).sum()
        # train/loss is the language model's loss; in a bag-of-words-only stage, that loss
        self.log("train/loss", main, prog_bar=True, batch_size=int(labelled))
        if bow is not None:
            self.log("train/bow_loss", bow, prog_bar=False, batch_size=int(labelled))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)
        if any(self.overlong.values()):
            for key, n in self.overlong.items():
                self.log(f"train/{key}", float(n), prog_bar=False, reduce_fx="max")
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch["input_ids"] is None:
            return
        labelled = (batch["labels"][:, 1:] != IGNORE).sum()
        lm, bow = self._losses(batch)
        self.log("val/loss", lm if lm is not None else bow, prog_bar=True, batch_size=int(labelled), sync_dist=True)

    def configure_optimizers(self):
        s = self.settings
        groups = parameter_groups(self.model, s)
        if len(self.bow_heads):
            lr = s.lr_projector if s.lr_projector is not None else s.lr
            groups.append({"params": list(self.bow_heads.parameters()), "lr": lr, "weight_decay": 0.0,
                           "name": "bow_heads"})
        if not groups:
            raise MMRWKVError("nothing to train: every parameter is frozen (check the recipe's train.freeze)")
        optimizer = torch.optim.AdamW(groups, betas=s.betas, eps=s.eps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, s.warmup_steps, s.total_steps, s.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
