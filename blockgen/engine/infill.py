"""Infill: fill the masked slots of a fixed skeleton of text.

A skeleton is a list of parts, each either fixed text or a `Slot` (a name and a span of masked tokens). The fixed
text is never changed, so whatever structure it spells survives by construction; the model only writes the slots.

Bidirectional families decode the whole canvas at once: every slot sees the fixed text on both sides, and the
scheduler commits masked positions across all slots by confidence (LLaDA's loop over one canvas). Causal and
block-causal families cannot see to their right, so each slot is decoded in turn as the continuation of everything
before it (with the engine, in blocks, for block-causal checkpoints), until its stop string or its length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockgen.engine.schedulers import make_scheduler
from blockgen.errors import BlockgenError, InvalidArgumentError
from blockgen.models.attention import Attention, AttentionKind


@dataclass(frozen=True)
class Slot:
    """A masked span of at most `tokens` tokens; its text ends at the first `stop` string (a line by default)."""

    name: str
    tokens: int
    stop: str = "\n"

    def __post_init__(self):
        if not isinstance(self.tokens, int) or not 1 <= self.tokens <= 1024:
            raise InvalidArgumentError(f"slot {self.name!r} tokens", self.tokens, "must be an int in [1, 1024]")


Part = str | Slot


def _check(parts: list[Part]) -> list[Slot]:
    if not isinstance(parts, list) or not parts:
        raise InvalidArgumentError("parts", parts, "must be a non-empty list of strings and Slots")
    slots = [p for p in parts if isinstance(p, Slot)]
    bad = [p for p in parts if not isinstance(p, (str, Slot))]
    if bad:
        raise InvalidArgumentError("parts", bad[0], "each part must be a string or a Slot")
    names = [s.name for s in slots]
    if len(set(names)) != len(names):
        raise InvalidArgumentError("parts", names, "slot names must be unique")
    return slots


def _finish(text: str, slot: Slot) -> str:
    return text.split(slot.stop, 1)[0] if slot.stop else text


def infill(
    lm,
    parts: list[Part],
    *,
    prefix: list[int] | None = None,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float | None = None,
    threshold: float = 0.9,
    block_size: int | None = None,
) -> dict[str, str]:
    """The text of every slot (by name), decoded by `lm` with the fixed parts around it.

    prefix: token ids that come before the skeleton (an instruction, a chat turn).
    threshold: confidence at which several masked positions of a bidirectional canvas are committed in one pass.
    block_size: decode block for causal / block-causal checkpoints (their default when None).
    """
    slots = _check(parts)
    prefix = list(prefix or [])
    if not slots:
        return {}
    if lm.family.attention is AttentionKind.BIDIRECTIONAL:
        return _joint(lm, parts, prefix, seed, temperature, top_p, threshold)
    return _in_turn(lm, parts, prefix, seed, temperature, top_p, threshold, block_size)


def _ids(lm, text: str) -> list[int]:
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _in_turn(lm, parts, prefix, seed, temperature, top_p, threshold, block_size) -> dict[str, str]:
    """Causal / block-causal: slot after slot, each the continuation of the text before it."""
    filled: dict[str, str] = {}
    ids = list(prefix)
    for n, part in enumerate(parts):
        if isinstance(part, str):
            ids += _ids(lm, part)
            continue
        if not ids:
            raise InvalidArgumentError("parts", part.name, "a causal model needs a prefix or text before the first slot")
        result = lm.generate_results(ids, max_new_tokens=part.tokens, stop=(part.stop,) if part.stop else (),
                                     seed=seed + n, temperature=temperature, top_p=top_p, threshold=threshold,
                                     block_size=block_size)[0]
        filled[part.name] = _finish(result.text, part)
        ids += _ids(lm, filled[part.name])
    return filled


@torch.no_grad()
def _joint(lm, parts, prefix, seed, temperature, top_p, threshold) -> dict[str, str]:
    """Bidirectional: one canvas, every slot masked, committed by confidence over all slots at once."""
    mask_id = lm.family.mask_token_id
    if mask_id is None:
        raise InvalidArgumentError("model", lm.name, "infill on a bidirectional model needs a mask token")
    ids, spans = list(prefix), {}
    for part in parts:
        if isinstance(part, str):
            ids += _ids(lm, part)
        else:
            spans[part.name] = (len(ids), len(ids) + part.tokens)
            ids += [mask_id] * part.tokens
    device = lm.device
    canvas = torch.tensor([ids], device=device)
    positions = torch.arange(len(ids), device=device)[None]
    if len(ids) > lm.config.max_position_embeddings:
        raise InvalidArgumentError("parts", len(ids), f"the canvas is longer than the model's "
                                   f"{lm.config.max_position_embeddings} positions")
    scheduler = make_scheduler("threshold", threshold=threshold)
    generator = torch.Generator(device=device).manual_seed(seed)
    shift = int(lm.family.logit_shift)
    total = int((canvas == mask_id).sum())
    for step in range(2 * total + 1):
        where = (canvas[0] == mask_id).nonzero()[:, 0]
        if len(where) == 0:
            break
        if shift and bool((where == 0).any()):
            raise InvalidArgumentError("parts", "slot at position 0", "a shifted model needs text before a slot")
        logits = lm.model(canvas, positions=positions, attention=Attention(AttentionKind.BIDIRECTIONAL),
                          logits_at=where - shift)
        logits[..., mask_id] = float("-inf")
        out = scheduler.step(logits, step, canvas[:, where], mask_token_id=mask_id, temperature=temperature,
                             top_p=top_p, generator=generator)
        canvas[0, where] = out.prev_sample[0]
    else:  # the threshold rule commits at least one position per pass, so this is a bug, not bad input
        raise BlockgenError(f"infill left {int((canvas == mask_id).sum())} masked positions after {2 * total + 1} passes")
    stops = set(lm.stop_token_ids)
    filled = {}
    for part in parts:
        if isinstance(part, Slot):
            lo, hi = spans[part.name]
            tokens = canvas[0, lo:hi].tolist()
            end = next((k for k, t in enumerate(tokens) if t in stops), len(tokens))
            filled[part.name] = _finish(lm.decode(tokens[:end]), part)
    return filled

