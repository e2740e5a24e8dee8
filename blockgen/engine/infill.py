"""Infill: fill the masked slots of a fixed skeleton of text.

A skeleton is a list of parts, each either fixed text or a `Slot` (a name and a span of masked tokens). The fixed
text is never changed, so whatever structure it spells survives by construction; the model only writes the slots.

Bidirectional families decode the whole canvas at once: every slot sees the fixed text on both sides, and the
scheduler commits masked positions across all slots by confidence (the engine's loop over one canvas: `fill`).
Causal and block-causal families cannot see to their right, so each slot is decoded in turn as the continuation of
everything before it (with the engine, in blocks, for block-causal checkpoints), until its stop string or its length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockgen.engine.decode import DecodeSettings, fill
from blockgen.engine.options import GenerationConfig
from blockgen.errors import InvalidArgumentError
from blockgen.models.attention import AttentionKind


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


def infill(lm, parts: list[Part], *, prefix: list[int] | None = None, **options) -> dict[str, str]:
    """The text of every slot (by name), decoded by `lm` with the fixed parts around it.

    prefix: token ids that come before the skeleton (an instruction, a chat turn).
    options: GenerationConfig's (threshold, temperature, top_p, seed, block_size, ...); each slot sets its own length
    and stop string. seed defaults to 0, so a skeleton fills the same way twice.
    """
    slots = _check(parts)
    for name in ("max_new_tokens", "stop"):
        if name in options:
            raise InvalidArgumentError(name, options[name], "is set by each Slot (tokens, stop), not for the infill")
    config = GenerationConfig.build(**({"seed": 0} | options))
    prefix = list(prefix or [])
    if not slots:
        return {}
    if lm.family.attention is AttentionKind.BIDIRECTIONAL:
        return _joint(lm, parts, prefix, config)
    return _in_turn(lm, parts, prefix, config)


def _in_turn(lm, parts, prefix, config: GenerationConfig) -> dict[str, str]:
    """Causal / block-causal: slot after slot, each the continuation of the text before it."""
    filled: dict[str, str] = {}
    ids = list(prefix)
    options = config.model_dump(exclude={"max_new_tokens", "stop", "seed"})
    for n, part in enumerate(parts):
        if isinstance(part, str):
            ids += lm.encode_text(part)
            continue
        if not ids:
            raise InvalidArgumentError("parts", part.name, "a causal model needs a prefix or text before the first slot")
        result = lm.generate_results(ids, max_new_tokens=part.tokens, stop=(part.stop,) if part.stop else (),
                                     seed=config.seed + n, **options)[0]
        filled[part.name] = _finish(result.text, part)
        ids += lm.encode_text(filled[part.name])
    return filled


def _joint(lm, parts, prefix, config: GenerationConfig) -> dict[str, str]:
    """Bidirectional: one canvas, every slot masked, filled by the engine's loop (engine.fill) over all slots at
    once."""
    mask_id = lm.family.mask_token_id
    if mask_id is None:
        raise InvalidArgumentError("model", lm.name, "infill on a bidirectional model needs a mask token")
    ids, spans = list(prefix), {}
    for part in parts:
        if isinstance(part, str):
            ids += lm.encode_text(part)
        else:
            spans[part.name] = (len(ids), len(ids) + part.tokens)
            ids += [mask_id] * part.tokens
    masked = sum(hi - lo for lo, hi in spans.values())
    generator = torch.Generator(device=lm.device).manual_seed(config.seed)
    settings = DecodeSettings(**(config.model_dump(exclude={"seed"}) | {
        "max_new_tokens": masked, "block_size": min(len(ids), 4096), "steps": min(masked, 4096), "cache": "none"}),
        generator=generator, dry_breaker_ids=config.dry_breaker_ids(lm.tokenizer))
    canvas = fill(lm.model, lm.family, config.make_scheduler(), ids, settings)
    stops = set(lm.stop_token_ids)
    filled = {}
    for part in parts:
        if isinstance(part, Slot):
            lo, hi = spans[part.name]
            tokens = canvas[lo:hi]
            end = next((k for k, t in enumerate(tokens) if t in stops), len(tokens))
            filled[part.name] = _finish(lm.decode(tokens[:end]), part)
    return filled
