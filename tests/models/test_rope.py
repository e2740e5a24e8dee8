"""RoPE NTK scaling: the extrapolation law reproduces LongLLaDA's published factors; factor 1 is plain RoPE."""

import math

import pytest
import torch

from blockgen.errors import InvalidArgumentError
from blockgen.models import critical_dimension, ntk_factor_for
from blockgen.models.rope import RotaryEmbedding, apply_rotary


def test_llada_critical_dimension_and_published_factors():
    # LLaDA: theta = 5e5, trained on 4096 tokens, head_dim 128.
    assert critical_dimension(128, 5e5, 4096) == 64
    assert ntk_factor_for(8192, head_dim=128, theta=5e5, trained_length=4096) == pytest.approx(3.4, abs=0.05)
    assert ntk_factor_for(16384, head_dim=128, theta=5e5, trained_length=4096) == pytest.approx(13.6, abs=0.1)


def test_no_scaling_within_the_trained_length():
    assert ntk_factor_for(4096, head_dim=128, theta=5e5, trained_length=4096) == 1.0
    assert ntk_factor_for(100, head_dim=64, theta=1e5, trained_length=8192) == 1.0
    with pytest.raises(InvalidArgumentError, match="target_length"):
        ntk_factor_for(0, head_dim=64, theta=1e5, trained_length=8192)


def test_factor_grows_with_target_length():
    factors = [ntk_factor_for(n, head_dim=64, theta=1e5, trained_length=8192) for n in (16384, 32768, 65536)]
    assert 1.0 < factors[0] < factors[1] < factors[2]


def test_factor_one_is_plain_rope():
    head_dim, theta = 32, 10000.0
    rope = RotaryEmbedding(head_dim, theta, ntk_factor=1.0)
    positions = torch.arange(50)[None]
    cos, sin = rope(positions, torch.float32)
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = positions[0, :, None].float() * inv_freq
    assert torch.allclose(cos[0, 0, :, : head_dim // 2], angles.cos())
    assert torch.allclose(sin[0, 0, :, head_dim // 2 :], angles.sin())
    # a rotation preserves norms and maps position 0 to the identity
    x = torch.randn(1, 1, 50, head_dim)
    rotated = apply_rotary(x, cos, sin)
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(rotated[:, :, 0], x[:, :, 0])


def test_factor_scales_theta():
    rope = RotaryEmbedding(64, 1e5, ntk_factor=4.0)
    assert rope.theta == 4e5
    assert math.isclose(float(rope.inv_freq(torch.device("cpu"))[1]), 1 / (4e5 ** (2 / 64)), rel_tol=1e-6)
    for bad in (0.0, -1.0, float("nan"), "2"):
        with pytest.raises(InvalidArgumentError, match="ntk_factor"):
            rope.set_ntk_factor(bad)
