"""How far ahead a block-diffusion model sees: the figure that tokens per forward follows.

A threshold decode commits, at each forward, the next position of the block (the one a left-to-right reading would
write next) and every later position whose confidence passes the threshold. So what decides tokens per forward is,
for each offset k ahead of that next position (k = 1 the next one, 2 the one after it, ...), how often the model's
most likely token is right and how often it is confident. Given reference texts (the base model's own answers), every
block of each text is shown as the decode loop shows it: the text before the block clean, the block's first c
positions committed and the rest masked, for every c; each masked position is scored at its offset c..S-1 -> 1..S-c.

One forward per cut scores every block of a text at once, in the training layout (a noisy copy whose blocks see the
clean copy of the blocks before them), so it is exactly what the cached decode loop computes.

A gated drafting adapter (blockgen.engine.drafting) is scored in its own layout, one forward a text: offset 1 is the
base's next token (the clean copy's prediction), offsets 2 .. S + 1 the drafts of a block's S masks. Its loop keeps a
draft only where the base writes the same token, so what it gains a forward is the run of drafts right and confident
from offset 2 on: `draft_runs` counts those runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from blockgen.adapt.layout import gated_batch, predictor_index, training_mask
from blockgen.errors import InvalidArgumentError


@dataclass
class Offset:
    offset: int  # 1: the block's next position; k: k - 1 positions after it
    positions: int  # masked positions scored at this offset
    right: float  # share whose most likely token is the reference's
    confident: float  # share whose top probability passes the threshold
    confident_right: float  # of those confident, the share right (nan when none was)

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def lookahead(lm, texts: list[tuple[list[int], list[int]]], *, threshold: float = 0.9,
              block_size: int | None = None) -> list[Offset]:
    """Per offset ahead, over the blocks that lie wholly in each text's completion. texts: (prompt ids, completion
    ids) pairs; block_size: the model's own by default."""
    size = block_size or lm.family.block_size
    mask_id = lm.family.mask_token_id
    if lm.family.gated:
        return _gated(lm, texts, threshold, size)[0]
    if mask_id is None or lm.family.attention.value != "block_causal":
        raise InvalidArgumentError("lm", str(lm.path), "is not a block-causal model with a mask token (what "
                                   "lookahead scores: an adapted model, a BD3-LM / SDAR / Fast-dLLM v2 checkpoint)")
    if not 0.0 < threshold <= 1.0:
        raise InvalidArgumentError("threshold", threshold, "must be in (0, 1]")
    counts = torch.zeros(size + 1, 4, dtype=torch.float64)  # per offset: positions, right, confident, both
    decoder = lm.model
    for prompt, completion in texts:
        ids = torch.tensor(list(prompt) + list(completion), device=lm.device)
        length = ids.numel()
        first, last = -(-len(prompt) // size), length // size  # whole blocks inside the completion
        if last <= first:
            continue
        index = predictor_index(length, size, lm.family.logit_shift, lm.device)
        position = torch.arange(length, device=lm.device)
        inside, block = position % size, position // size
        scored = (block >= first) & (block < last)
        attn_mask = training_mask(length, size).to(lm.device)
        positions = position.repeat(2)[None]
        for cut in range(size):
            masked = scored & (inside >= cut)
            noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)
            hidden = decoder.hidden_states(torch.cat([noisy, ids])[None], positions=positions, attn_mask=attn_mask)
            columns = masked.nonzero()[:, 0]
            probs = decoder.logits(hidden[0, index[columns]]).float().softmax(-1)
            top, picked = probs.max(-1)
            right, sure = picked == ids[columns], top > threshold
            offset = (inside[columns] - cut + 1).cpu()
            for name, values in enumerate((torch.ones_like(right), right, sure, right & sure)):
                counts[:, name].index_add_(0, offset, values.double().cpu())
    return [Offset(k, int(n), r / n, c / n, both / c if c else float("nan"))
            for k, (n, r, c, both) in enumerate(counts.tolist()) if k and n]


def draft_runs(lm, texts: list[tuple[list[int], list[int]]], *, threshold: float = 0.9,
               block_size: int | None = None) -> dict[int, float]:
    """A gated adapter's drafts as its loop keeps them: {run length: share of blocks} where run length counts the
    drafts from offset 2 on that are confident and right, up to the first that is not."""
    if not lm.family.gated:
        raise InvalidArgumentError("lm", str(lm.path), "is not a gated drafting adapter")
    return _gated(lm, texts, threshold, block_size or lm.family.block_size)[1]


@torch.no_grad()
def _gated(lm, texts, threshold: float, size: int) -> tuple[list[Offset], dict[int, float]]:
    if not 0.0 < threshold <= 1.0:
        raise InvalidArgumentError("threshold", threshold, "must be in (0, 1]")
    counts = torch.zeros(size + 2, 4, dtype=torch.float64)
    runs: dict[int, int] = {}
    decoder = lm.model
    for prompt, completion in texts:
        ids = torch.tensor([list(prompt) + list(completion)], device=lm.device)
        length = ids.shape[1]
        blocks = (length - 1 - len(prompt)) // size  # whole blocks of the answer (from its start), one token after
        if blocks < 1:
            continue
        maskable = torch.zeros_like(ids, dtype=torch.bool)
        maskable[:, len(prompt):] = True
        batch = gated_batch(ids, torch.ones_like(maskable), maskable, block_size=size,
                            mask_token_id=lm.family.mask_token_id)
        hidden = decoder.hidden_states(batch.input_ids, positions=batch.positions, attn_mask=batch.attn_mask,
                                       lora_gate=batch.gate)[0]
        for block in range(blocks):
            start = len(prompt) + block * size
            rows = torch.cat([torch.tensor([length + start - 1]), torch.arange(start, start + size)]).to(lm.device)
            probs = decoder.logits(hidden[rows]).float().softmax(-1)
            top, picked = probs.max(-1)
            reference = ids[0, start : start + size + 1]
            keep = min(size + 1, length - start)
            right, sure = (picked == reference)[:keep], (top > threshold)[:keep]
            for name, values in enumerate((torch.ones_like(right), right, sure, right & sure)):
                counts[1 : keep + 1, name] += values.double().cpu()
            good = (right & sure)[1:].tolist()
            run = next((j for j, ok in enumerate(good) if not ok), len(good))
            runs[run] = runs.get(run, 0) + 1
    total = sum(runs.values()) or 1
    offsets = [Offset(k, int(n), r / n, c / n, both / c if c else float("nan"))
               for k, (n, r, c, both) in enumerate(counts.tolist()) if k and n]
    return offsets, {run: n / total for run, n in sorted(runs.items())}
