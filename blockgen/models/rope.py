"""Rotary position embedding with NTK scaling (theta' = factor * theta, as LongLLaDA applies it)."""

from __future__ import annotations

import math

import torch
from torch import nn

from blockgen.errors import InvalidArgumentError


def critical_dimension(head_dim: int, theta: float, trained_length: int) -> int:
    """d_crit = 2 * ceil((d / 2) * log_theta(T_train / (2 pi))): the dimensions that saw a full period in training."""
    return 2 * math.ceil((head_dim / 2) * math.log(trained_length / (2 * math.pi), theta))


def ntk_factor_for(target_length: int, *, head_dim: int, theta: float, trained_length: int) -> float:
    """The RoPE extrapolation law LongLLaDA uses: factor = theta^-1 * (T_target / (2 pi))^(d / d_crit).

    Returns 1.0 when the target fits the trained length (no scaling is needed then).
    """
    if target_length <= 0:
        raise InvalidArgumentError("target_length", target_length, "must be a positive number of tokens")
    if target_length <= trained_length:
        return 1.0
    d_crit = critical_dimension(head_dim, theta, trained_length)
    factor = (target_length / (2 * math.pi)) ** (head_dim / d_crit) / theta
    return max(1.0, factor)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for explicit positions. Half-split layout (rotate_half), as LLaMA/Qwen/LLaDA use."""

    def __init__(self, head_dim: int, theta: float, ntk_factor: float = 1.0):
        super().__init__()
        self.head_dim, self.base_theta = head_dim, theta
        self.set_ntk_factor(ntk_factor)

    @property
    def theta(self) -> float:
        return self.base_theta * self.ntk_factor

    def set_ntk_factor(self, factor: float) -> None:
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
            raise InvalidArgumentError("ntk_factor", factor, "must be a positive finite number")
        self.ntk_factor = float(factor)
        # Kept in float32 outside the module's buffers so that model.to(dtype) never rounds it.
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device="cpu").float() / self.head_dim
        self._inv_freq = {torch.device("cpu"): 1.0 / (self.theta**exponents)}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        if device not in self._inv_freq:
            self._inv_freq[device] = self._inv_freq[torch.device("cpu")].to(device)
        return self._inv_freq[device]

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: (B, T) -> cos, sin: (B, 1, T, head_dim), computed in float32 then cast.
        freqs = positions[..., None].float() * self.inv_freq(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
