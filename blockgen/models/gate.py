"""Gated low-rank terms: an adapter that acts only at chosen token positions of a forward pass.

A gated adapter (`blockgen adapt --gated`) drafts ahead without touching the base: its LoRA update applies at mask
tokens only, so every other position computes exactly the base model's states, keys and values. The decoder owns
one `LoraGate`; a forward that passes `lora_gate` sets it for the duration of the pass and every gated term reads it.
No gate set means no position: the model is the base alone.
"""

from __future__ import annotations

import torch

from blockgen.errors import InvalidArgumentError


class LoraGate:
    """Where the gated terms apply in the pass under way: `value`, a (B, T, 1) tensor of 0/1, or `start`, the first
    of the positions they apply at in every row (all those after it too: the drafting loop's masks end its pass, and
    a term computed on those rows alone costs a fraction of one over the whole pass). Neither: nowhere."""

    def __init__(self):
        self.value: torch.Tensor | None = None
        self.start: int | None = None

    def set(self, gate: torch.Tensor | int | None, length: int) -> None:
        """gate: (B, T) bool or 0/1, or the first gated position (an int), or None."""
        self.value, self.start = None, None
        if isinstance(gate, int) and not isinstance(gate, bool):
            if not 0 <= gate <= length:
                raise InvalidArgumentError("lora_gate", gate, f"must be a position in 0..{length}")
            self.start = gate
        elif gate is not None:
            self.value = gate[..., None]

    def scale(self, term: torch.Tensor) -> torch.Tensor:
        """The term (B, T, N) kept at the gated positions only."""
        if self.value is not None:
            return term * self.value.to(term.dtype)
        if self.start is not None:
            keep = torch.arange(term.shape[1], device=term.device) >= self.start
            return term * keep[:, None].to(term.dtype)
        return term * 0


def gate_peft_layers(model: torch.nn.Module, gate: LoraGate) -> int:
    """Gate every peft LoRA layer of `model` by `gate` (a hook on each LoRA up-projection, so its whole update is
    scaled; the names and weights stay peft's, as adapters are saved). Returns how many layers it gated."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for up in module.lora_B.values():
                up.register_forward_hook(lambda _module, _inputs, output: gate.scale(output))
                count += 1
    return count
