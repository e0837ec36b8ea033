"""The masked loss, parameter groups and learning-rate schedule of the training module."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmrwkv.training.module import OptimSettings, lr_factor, masked_lm_loss, parameter_groups


class CountingHead(nn.Linear):
    def forward(self, x):
        self.rows = x.shape[0]
        return super().forward(x)


def test_masked_loss_equals_full_cross_entropy_over_labelled_next_tokens():
    hidden = torch.randn(2, 5, 8)  # (B, T, C)
    head = nn.Linear(8, 11, bias=False)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 7, -100, -100, 2]])
    full = head(hidden)  # (B, T, V)
    targets = labels[:, 1:]
    expected = F.cross_entropy(full[:, :-1].reshape(-1, 11), targets.reshape(-1), ignore_index=-100)
    assert torch.allclose(masked_lm_loss(hidden, head, labels), expected, atol=1e-6)


def test_masked_loss_runs_the_head_only_on_labelled_positions():
    head = CountingHead(8, 50, bias=False)
    labels = torch.full((3, 10), -100)
    labels[0, 4], labels[2, 9] = 5, 6
    masked_lm_loss(torch.randn(3, 10, 8), head, labels)
    assert head.rows == 2


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict({"emb": nn.Embedding(10, 4), "ln": nn.LayerNorm(4), "lin": nn.Linear(4, 4)})
        self.encoders = nn.ModuleDict({"image": nn.Linear(3, 4)})
        self.projectors = nn.ModuleDict({"image": nn.Linear(4, 4)})
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_parameter_groups_have_per_part_lr_and_decay_only_on_matrices():
    settings = OptimSettings(lr=1e-3, lr_projector=1e-2, lr_encoder=1e-5, weight_decay=0.1)
    groups = {g["name"]: g for g in parameter_groups(Toy(), settings)}
    assert groups["projector"]["lr"] == 1e-2 and groups["encoder"]["lr"] == 1e-5
    assert groups["backbone"]["lr"] == 1e-3 and groups["backbone"]["weight_decay"] == 0.1
    assert groups["backbone_nodecay"]["weight_decay"] == 0.0
    # emb + lin weights decay; LayerNorm weight/bias and the Linear bias do not
    assert sum(p.numel() for p in groups["backbone"]["params"]) == 40 + 16
    assert sum(p.numel() for p in groups["backbone_nodecay"]["params"]) == 4 + 4 + 4
    trained = sum(p.numel() for g in groups.values() for p in g["params"])
    assert trained == sum(p.numel() for p in Toy().parameters() if p.requires_grad)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (3, 1.0), (4, 1.0), (14, 0.1), (99, 0.1)])
def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor(step, expected):
    assert math.isclose(lr_factor(step, warmup=4, total=14, min_ratio=0.1), expected, rel_tol=1e-9)


def test_schedule_midpoint_is_halfway_between_peak_and_floor():
    assert math.isclose(lr_factor(9, warmup=4, total=14, min_ratio=0.0), 0.5, rel_tol=1e-9)
