"""Weight-only quantization for CPU inference: the decoder's linear layers (and its LM head) keep their weights in
few bits and multiply through PyTorch's own weight-only kernels (the ones gpt-fast uses); activations stay in the
model's dtype.

- int8: one scale per output row (`aten._weight_int8pack_mm`), every layer and the LM head.
- int4: groups of 32 inputs with a scale and a minimum each (`aten._weight_int4pack_mm_for_cpu`), the layout of the
  GGUF Q4_1 blocks the embedded default ships in, so its layers come back nearly as they were stored; the LM head
  (stored as 8-bit blocks) stays int8, as does a layer whose input width is not a multiple of 32.

At a 135M-parameter model a decoding step reads every weight once per forward, so a quarter of float32's bytes (half
of bfloat16's) is what makes it faster; `benchmarks/cpu_speed.py` measures it, and the parity test bounds what it
costs in accuracy.

On a CPU without native bfloat16 the model stays in float32, and there `pack_decoder` gives the same layers (fused
alike) float32 weights laid out once for oneDNN's matmul (what torch.compile's CPU freezing does): exact, and at the
few rows of a decoding step far faster than the general matmul, which is slow at 2 to 7 rows (on 2 AVX2 cores, 3x
for one 1536 x 576 layer at 3 rows; decoding 1.3x the tokens/s at one row, 2.4x at the writer's three).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blockgen.errors import InvalidArgumentError
from blockgen.models.decoder import PROJECTIONS
from blockgen.models.gate import LoraGate

QUANTIZE_MODES = ("int8", "int4")
INT4_GROUP = 32
# The int4 kernel up to this many rows, a dense matmul above (2 cores: at 64 rows the kernel takes 0.76 ms for a
# 1536 x 576 layer against 1.0 ms to rebuild the weight and multiply; at 256 rows 2.8 ms against 1.2 ms).
INT4_KERNEL_ROWS = 96
# Above this many rows a call is a prefill, where the int8 kernel is slower than dequantizing once for a dense matmul
# (measured on 2 cores: at 8 rows the two are even, at 400 rows the int8 kernel is 4x slower).
DENSE_ROWS = 16


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) weight -> (N, K) int8 and (N,) float32 scales, symmetric per output row: w ~= q * scale."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


class _WeightOnly(nn.Module):
    """What the quantized layers share: inputs cast to the layer's dtype (its bias's and scales') and flattened to
    rows for the layer's `_matmul`, the bias added after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        dtype = self.dense_dtype
        if flat.dtype != dtype:
            flat = flat.to(dtype)
        out = self._matmul(flat)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


class Int8Linear(_WeightOnly):
    """A Linear layer whose weight is int8 with per-row scales (weight-only; inputs and outputs keep their dtype)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """weight (N, K) and bias (N,) of a Linear layer; scales and bias keep the weight's dtype (the activations')."""
        super().__init__()
        q, scale = int8_rows(weight)
        self.out_features, self.in_features = q.shape
        self.register_buffer("weight_int8", q)
        self.register_buffer("scales", scale.to(weight.dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(weight.dtype))

    @property
    def dense_dtype(self) -> torch.dtype:
        return self.scales.dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        return cls(linear.weight, linear.bias)

    def _matmul(self, flat: torch.Tensor) -> torch.Tensor:
        if flat.shape[0] > DENSE_ROWS:  # a prefill: the dense kernel on the weight dequantized for this call
            return F.linear(flat, self.weight_int8.to(flat.dtype) * self.scales[:, None])
        # decoding steps: the int8 kernel reads a quarter of float32's bytes
        return torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.weight_int8, self.scales)

    def dequantized(self) -> torch.Tensor:
        return self.weight_int8.float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


class Int4Linear(_WeightOnly):
    """A Linear layer whose weight is 4-bit in groups of INT4_GROUP inputs, each with a scale and a minimum
    (asymmetric: w ~= q * scale + minimum, q in 0..15; what GGUF calls Q4_1)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, group: int = INT4_GROUP):
        super().__init__()
        n, k = weight.shape
        if k % group:
            raise InvalidArgumentError("weight", tuple(weight.shape), f"int4 needs an input width divisible by {group}")
        w = weight.detach().float().reshape(n, k // group, group)
        low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-12)
        q = torch.round((w - low) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
        self.out_features, self.in_features, self.group = n, k, group
        # the kernel's convention: w = (q - 8) * scale + zero, scales and zeros as (groups, N, 2)
        zero = low + 8 * scale
        dtype = weight.dtype
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        self.register_buffer("scales_zeros", torch.stack((scale[..., 0], zero[..., 0]), -1).transpose(0, 1)
                             .contiguous().to(dtype))
        # for prefills: the dense weight, rebuilt per call as offset + code * scale (one fused op in the layer's dtype)
        self.register_buffer("codes", q.to(torch.uint8).reshape(n, k // group, group))
        self.register_buffer("dense_scale", scale.to(dtype))
        self.register_buffer("dense_offset", (zero - 8 * scale).to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))

    @property
    def dense_dtype(self) -> torch.dtype:
        return self.scales_zeros.dtype

    def _matmul(self, flat: torch.Tensor) -> torch.Tensor:
        if flat.shape[0] > INT4_KERNEL_ROWS:
            dense = torch.addcmul(self.dense_offset, self.codes.to(flat.dtype), self.dense_scale)
            return F.linear(flat, dense.reshape(self.out_features, self.in_features))
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat.contiguous(), self.weight_int4, self.group,
                                                          self.scales_zeros)

    def dequantized(self) -> torch.Tensor:
        n, k = self.out_features, self.in_features
        scale, zero = self.scales_zeros.float().transpose(0, 1).unbind(-1)  # (N, groups) each
        return ((self.codes.float() - 8) * scale[..., None] + zero[..., None]).reshape(n, k)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 weight-only, groups of " \
               f"{self.group}"


PACK_ROWS = 3  # the rows oneDNN lays a packed weight out for (any count works; the writer decodes three at a time)


def can_pack() -> bool:
    """Whether this PyTorch has the oneDNN kernels PackedLinear uses (x86 and arm builds with mkldnn do)."""
    return torch.backends.mkldnn.is_available() and all(
        hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise"))


def check_packable(device: torch.device, dtype: torch.dtype) -> None:
    """Raise InvalidArgumentError (naming `pack`) unless a model on `device` in `dtype` can be packed here."""
    if device.type != "cpu" or dtype != torch.float32:
        raise InvalidArgumentError("pack", True, f"packs a float32 model on CPU, not {dtype} on {device}")
    if not can_pack():
        raise InvalidArgumentError("pack", True, f"needs PyTorch's oneDNN linear kernels (torch {torch.__version__} "
                                   "lacks them)")


class PackedLinear(nn.Module):
    """A float32 Linear layer whose weight oneDNN has reordered once for its own matmul kernel (no rounding: the
    same weight, another memory layout); inputs in another dtype are cast to float32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().float().contiguous(), PACK_ROWS)
        self.register_buffer("weight_packed", packed)
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            # the kernel has no backward: a training step would leave these weights as they were, without a word
            raise InvalidArgumentError("pack", True, "packed layers are for inference (no gradient flows through "
                                       "them); load with pack=False to train")
        if x.dtype != torch.float32:
            x = x.float()
        return torch.ops.mkldnn._linear_pointwise(x, self.weight_packed, self.bias, "none", [], "")

    def dequantized(self) -> torch.Tensor:
        return self.weight_packed.to_dense()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float32 packed for oneDNN"


def _quantized(weight: torch.Tensor, bias: torch.Tensor | None, mode: str) -> nn.Module:
    if mode == "packed":
        return PackedLinear(weight, bias)
    if mode == "int4" and weight.shape[1] % INT4_GROUP == 0:
        return Int4Linear(weight, bias)
    return Int8Linear(weight, bias)


class WithLowRank(nn.Module):
    """A layer plus an exact low-rank term: y = layer(x) + up(down(x)). A LoRA adapter kept apart from its quantized
    base (merged first, its small update would mostly vanish in the 4-bit rounding of the sum), or from any base when
    the adapter is gated: then the term applies only where `gate` says (see blockgen.models.gate)."""

    def __init__(self, layer: nn.Module, down: torch.Tensor, up: torch.Tensor, gate: LoraGate | None = None):
        super().__init__()
        self.layer = layer
        # float32: for matrices this thin, CPU float32 GEMMs are about twice as fast as bfloat16 ones
        self.register_buffer("down", down.float().contiguous())  # (R, K)
        self.register_buffer("up", up.float().contiguous())  # (N, R), the LoRA scaling folded in
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        gate = self.gate
        if gate is None:
            return out + self._term(x).to(out.dtype)
        if gate.start is not None:  # the last positions only: the term on their rows, added in place
            if gate.start < x.shape[1]:
                out[:, gate.start :] += self._term(x[:, gate.start :]).to(out.dtype)
            return out
        if gate.value is None:
            return out  # gated and no position selected: the base alone
        return out + gate.scale(self._term(x)).to(out.dtype)

    def _term(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.to(self.down.dtype), self.down), self.up)


LowRank = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name -> (down (R, K), up (N, R))


def _with_low_rank(layer: nn.Module, parts: list[tuple[torch.Tensor, torch.Tensor] | None],
                   outs: list[int], gate: LoraGate | None = None) -> nn.Module:
    """`layer` (over the stacked outputs `outs` of the named layers) with their low-rank terms, if any: the downs
    stacked, the ups block-diagonal."""
    if all(part is None for part in parts):
        return layer
    some = next(part for part in parts if part is not None)
    k, dtype = some[0].shape[1], some[0].dtype
    parts = [part if part is not None else (some[0].new_zeros(0, k), some[1].new_zeros(n, 0))
             for part, n in zip(parts, outs)]
    down = torch.cat([d for d, _ in parts])
    up = torch.block_diag(*[u for _, u in parts]).to(dtype)
    return WithLowRank(layer, down, up, gate)


def _fused(parent: nn.Module, names: tuple[str, ...], mode: str, low_rank: list | None = None,
           gate: LoraGate | None = None) -> nn.Module:
    """One quantized layer over the stacked weights of `parent`'s Linear layers `names`, which leave `parent`."""
    layers = [getattr(parent, name) for name in names]
    biases = [layer.bias for layer in layers]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b if b is not None else layer.weight.new_zeros(layer.out_features) for b, layer in zip(biases, layers)])
    fused = _quantized(torch.cat([layer.weight for layer in layers]), bias, mode)
    if low_rank is not None:
        fused = _with_low_rank(fused, low_rank, [layer.out_features for layer in layers], gate)
    for name in names:
        delattr(parent, name)
    return fused


def quantize_decoder(model: nn.Module, mode: str, low_rank: LowRank | None = None, gated: bool = False) -> nn.Module:
    """Replace the decoder's projection layers and LM head by weight-only quantized ones, in place (CPU only).
    A tied head gets its own quantized copy; the embedding lookup keeps the full-precision table.
    low_rank: exact low-rank terms (an unmerged LoRA adapter) added to the named projections' quantized outputs;
    gated: only where the decoder's lora_gate says (a gated adapter)."""
    if mode not in QUANTIZE_MODES:
        raise InvalidArgumentError("quantize", mode, f"must be one of {QUANTIZE_MODES} (or None)")
    if model.device.type != "cpu":
        raise InvalidArgumentError("quantize", mode, f"is a CPU option; the model is on {model.device}")
    for kernel in ("_weight_int8pack_mm",) + (("_weight_int4pack_mm_for_cpu",) if mode == "int4" else ()):
        if not hasattr(torch.ops.aten, kernel):
            raise InvalidArgumentError("quantize", mode, f"needs torch.ops.aten.{kernel} (torch {torch.__version__} "
                                       "lacks it)")
    return _replace_layers(model, mode, low_rank, gated)


def pack_decoder(model: nn.Module, low_rank: LowRank | None = None, gated: bool = False) -> nn.Module:
    """Replace the decoder's projection layers and LM head by float32 layers packed for oneDNN (PackedLinear), in
    place (CPU, float32, inference only: the packed weights take no gradient); q/k/v and gate/up fused as
    quantize_decoder fuses them. low_rank and gated as in quantize_decoder (an adapter that was not merged)."""
    check_packable(model.device, model.dtype)
    return _replace_layers(model, "packed", low_rank, gated)


def _replace_layers(model: nn.Module, mode: str, low_rank: LowRank | None, gated: bool) -> nn.Module:
    from blockgen.models.decoder import MLP, SelfAttention

    low_rank = low_rank or {}
    gate = model.lora_gate if gated else None
    for prefix, module in list(model.named_modules()):  # layers that read one input become one kernel call (per-row
        names = (("q_proj", "k_proj", "v_proj") if isinstance(module, SelfAttention) else  # scales: the same numbers
                 ("gate_proj", "up_proj") if isinstance(module, MLP) else None)  # as quantizing each apart)
        if names is not None:
            parts = [low_rank.get(f"{prefix}.{name}") for name in names]
            fused = _fused(module, names, mode, parts, gate)
            setattr(module, "qkv_proj" if isinstance(module, SelfAttention) else "gate_up_proj", fused)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in PROJECTIONS:
            parent, _, child = name.rpartition(".")
            layer = _with_low_rank(_quantized(module.weight, module.bias, mode), [low_rank.get(name)],
                                   [module.out_features], gate)
            setattr(model.get_submodule(parent), child, layer)
    head = model.lm_head.weight if "lm_head" in model._modules else model.model.embed_tokens.weight
    model.head_kernel = PackedLinear(head) if mode == "packed" else Int8Linear(head)  # the int4 modes' head: int8
    return model


def attach_low_rank(model: nn.Module, low_rank: LowRank, gated: bool = True) -> nn.Module:
    """Wrap the named projections of an unquantized decoder with their low-rank terms, in place (a gated adapter
    cannot be merged into its base: the base must stay exact where the gate is closed)."""
    gate = model.lora_gate if gated else None
    for name, (down, up) in low_rank.items():
        parent, _, child = name.rpartition(".")
        module = model.get_submodule(name)
        setattr(model.get_submodule(parent), child, WithLowRank(module, down, up, gate))
    return model
