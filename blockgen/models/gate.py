"""Gated low-rank terms: an adapter that acts only at chosen token positions of a forward pass.

A gated adapter (`blockgen adapt --gated`) drafts ahead without touching the base: its LoRA update applies at mask
tokens only, so every other position computes exactly the base model's states, keys and values. The decoder owns
one `LoraGate`; a forward that passes `lora_gate` sets it for the duration of the pass and every gated term reads it.
No gate set means no position: the model is the base alone.
"""

from __future__ import annotations

import torch


class LoraGate:
    """Where the gated terms apply in the pass under way: a (B, T, 1) tensor of 0/1, or None (nowhere)."""

    def __init__(self):
        self.value: torch.Tensor | None = None

    def scale(self, term: torch.Tensor) -> torch.Tensor:
        """The term (B, T, N) kept at the gated positions only."""
        if self.value is None:
            return term * 0
        return term * self.value.to(term.dtype)


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
