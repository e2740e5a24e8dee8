"""Weight-only int8 quantization for CPU inference: the decoder's linear layers (and its LM head) keep their weights
as int8 with one scale per output row, and multiply through PyTorch's own int8 weight-only kernel
(`aten._weight_int8pack_mm`, the one gpt-fast uses); activations stay in the model's dtype.

At a 135M-parameter model a decoding step reads every weight once per forward, so a quarter of float32's bytes (half
of bfloat16's) is what makes it faster; `benchmarks/cpu_speed.py` measures it, and the parity test bounds what it
costs in accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blockgen.errors import InvalidArgumentError
from blockgen.models.decoder import PROJECTIONS

QUANTIZE_MODES = ("int8",)
# Above this many rows a call is a prefill, where the int8 kernel is slower than dequantizing once for a dense matmul
# (measured on 2 cores: at 8 rows the two are even, at 400 rows the int8 kernel is 4x slower).
DENSE_ROWS = 16


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) weight -> (N, K) int8 and (N,) float32 scales, symmetric per output row: w ~= q * scale."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


class Int8Linear(nn.Module):
    """A Linear layer whose weight is int8 with per-row scales (weight-only; inputs and outputs keep their dtype)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """weight (N, K) and bias (N,) of a Linear layer; scales and bias keep the weight's dtype (the activations')."""
        super().__init__()
        q, scale = int8_rows(weight)
        self.out_features, self.in_features = q.shape
        self.register_buffer("weight_int8", q)
        self.register_buffer("scales", scale.to(weight.dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(weight.dtype))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if flat.dtype != self.scales.dtype:
            flat = flat.to(self.scales.dtype)
        if flat.shape[0] > DENSE_ROWS:  # a prefill: the dense kernel on the weight dequantized for this call
            out = F.linear(flat, self.weight_int8.to(flat.dtype) * self.scales[:, None])
        else:  # decoding steps: the int8 kernel reads a quarter of float32's bytes
            out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.weight_int8, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def dequantized(self) -> torch.Tensor:
        return self.weight_int8.float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def _fused(parent: nn.Module, names: tuple[str, ...]) -> Int8Linear:
    """One Int8Linear over the stacked weights of `parent`'s Linear layers `names`, which leave `parent`."""
    layers = [getattr(parent, name) for name in names]
    biases = [layer.bias for layer in layers]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b if b is not None else layer.weight.new_zeros(layer.out_features) for b, layer in zip(biases, layers)])
    fused = Int8Linear(torch.cat([layer.weight for layer in layers]), bias)
    for name in names:
        delattr(parent, name)
    return fused


def quantize_decoder(model: nn.Module, mode: str) -> nn.Module:
    """Replace the decoder's projection layers and LM head by weight-only quantized ones, in place (CPU only).
    A tied head gets its own quantized copy; the embedding lookup keeps the full-precision table."""
    if mode not in QUANTIZE_MODES:
        raise InvalidArgumentError("quantize", mode, f"must be one of {QUANTIZE_MODES} (or None)")
    if model.device.type != "cpu":
        raise InvalidArgumentError("quantize", mode, f"is a CPU option; the model is on {model.device}")
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        raise InvalidArgumentError("quantize", mode, f"needs torch.ops.aten._weight_int8pack_mm (torch "
                                   f"{torch.__version__} lacks it)")
    from blockgen.models.decoder import MLP, SelfAttention

    for module in model.modules():  # layers that read one input become one kernel call (per-row scales: the same
        if isinstance(module, SelfAttention):  # numbers as quantizing each apart)
            module.qkv_proj = _fused(module, ("q_proj", "k_proj", "v_proj"))
        elif isinstance(module, MLP):
            module.gate_up_proj = _fused(module, ("gate_proj", "up_proj"))
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in PROJECTIONS:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, Int8Linear.from_linear(module))
    head = model.model.embed_tokens.weight if model.config.tie_word_embeddings else model.lm_head.weight
    model.head_int8 = Int8Linear(head)
    return model
