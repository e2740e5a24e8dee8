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
    # Just past the trained length the law can ask for less than 1 (no scaling at all): never below the NTK-aware
    # scaling s^(d / (d - 2)) for s = target / trained, which exceeds 1 as soon as the target does.
    aware = (target_length / trained_length) ** (head_dim / (head_dim - 2))
    return max(factor, aware)


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
        """The factor used when a call names none (the model's own, set at load)."""
        self.ntk_factor = _checked(factor)
        self._inv_freq: dict[tuple[float, torch.device], torch.Tensor] = {}

    def inv_freq(self, device: torch.device, factor: float | None = None) -> torch.Tensor:
        """1 / (factor * theta)^(2i/d), kept in float32 per (factor, device) outside the module's buffers, so that
        model.to(dtype) never rounds it and no call changes what another sees."""
        factor = self.ntk_factor if factor is None else _checked(factor)
        key = (factor, torch.device(device))
        if key not in self._inv_freq:
            exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
            self._inv_freq[key] = (1.0 / ((self.base_theta * factor) ** exponents)).to(device)
        return self._inv_freq[key]

    def forward(self, positions: torch.Tensor, dtype: torch.dtype,
                factor: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: (B, T) -> cos, sin: (B, 1, T, head_dim), computed in float32 then cast; factor: this call's NTK
        factor (None: the model's)."""
        freqs = positions[..., None].float() * self.inv_freq(positions.device, factor)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _checked(factor) -> float:
    if isinstance(factor, bool) or not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise InvalidArgumentError("ntk_factor", factor, "must be a positive finite number")
    return float(factor)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
