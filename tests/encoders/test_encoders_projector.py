"""Projectors: linear / mlpNx_gelu maps, avgpool / conv token reduction (1-D and grid), token counts, bad specs."""

import pytest
import torch
from torch import nn

from mmrwkv.encoders.projector import build_projector
from mmrwkv.errors import ConfigError


def test_linear_and_mlp_shapes_and_depth():
    x = torch.randn(2, 7, 12)
    assert build_projector("linear", 12, 5)(x).shape == (2, 7, 5)
    mlp = build_projector("mlp3x_gelu", 12, 5)
    assert mlp(x).shape == (2, 7, 5)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    gelus = [m for m in mlp.modules() if isinstance(m, nn.GELU)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 5), (5, 5), (5, 5)] and len(gelus) == 2
    assert build_projector("mlp1x_gelu", 12, 5).num_tokens(7) == 7


def test_avgpool_averages_consecutive_tokens_and_zero_pads_the_last_window():
    proj = build_projector("avgpool:2+linear", 1, 1)
    with torch.no_grad():
        proj.mlp.weight.fill_(1.0)
        proj.mlp.bias.zero_()
    x = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]).view(1, 5, 1)
    out = proj(x)
    assert proj.num_tokens(5) == 3 == out.shape[1]
    assert out.view(-1).tolist() == [2.0, 6.0, 4.5]


def test_grid_avgpool_pools_square_cells():
    proj = build_projector("linear", 1, 1, reduction="avgpool:2", grid=True)
    with torch.no_grad():
        proj.mlp.weight.fill_(1.0)
        proj.mlp.bias.zero_()
    # a 4 x 4 grid, row-major: top-left 2 x 2 cell is {0, 1, 4, 5}
    x = torch.arange(16.0).view(1, 16, 1)
    out = proj(x).view(-1)
    assert proj.num_tokens(16) == 4 and proj.num_tokens(25) == 9
    assert out.tolist() == [2.5, 4.5, 10.5, 12.5]


@pytest.mark.parametrize(("spec", "grid", "n_in", "n_out"), [("conv:3", False, 10, 4), ("conv:2", True, 36, 9)])
def test_conv_reduction_counts_match_forward(spec, grid, n_in, n_out):
    proj = build_projector("mlp2x_gelu", 8, 6, reduction=spec, grid=grid)
    out = proj(torch.randn(3, n_in, 8))
    assert out.shape == (3, n_out, 6) and proj.num_tokens(n_in) == n_out
    out.sum().backward()
    assert proj.reduction.conv.weight.grad is not None


def test_grid_reduction_needs_a_square_token_count():
    proj = build_projector("linear", 4, 4, reduction="avgpool:2", grid=True)
    with pytest.raises(ConfigError, match="square number of tokens, got 17"):
        proj.num_tokens(17)


def test_width_mismatch_is_reported():
    with pytest.raises(ConfigError, match="width 3, expected 4"):
        build_projector("linear", 4, 4)(torch.randn(1, 2, 3))


@pytest.mark.parametrize(
    ("spec", "kw", "problem"),
    [
        ("mlp0x_gelu", {}, "N >= 1"),
        ("mlpx_gelu", {}, "mlpNx_gelu"),
        ("transformer", {}, "use 'linear' or 'mlpNx_gelu'"),
        ("avgpool:0+linear", {}, "k >= 1"),
        ("linear", {"reduction": "maxpool:2"}, "use 'avgpool:k' or 'conv:k'"),
        ("avgpool:2+conv:2+linear", {}, "one 'avgpool:k' or 'conv:k'"),
        ("linear+mlp2x_gelu", {}, "expected one of"),
        ("", {}, "expected one of"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, kw, problem):
    with pytest.raises(ConfigError, match=problem):
        build_projector(spec, 4, 4, **kw)
