"""The block-diffusion decode loop: a plain generator over (model, family, scheduler, prompts, settings).

It knows token ids only. Layout: every row's prompt is left-padded so that its first generation block starts at the
same column; blocks then advance column-aligned for the whole batch while each row keeps its own positions. Blocks
are aligned to absolute positions for causal / block-causal families (the prompt's tail shares the first block and is
never edited) and to the prompt's end for bidirectional ones (as LLaDA and Dream decode).

Caches:
- "exact" (causal, block-causal): keys/values of finished blocks are written once; each step runs the blocks not yet
  cached plus the current one and keeps only the former.
- "prefix" / "dual" (Fast-dLLM, for bidirectional models): a full pass at each block start caches the prefix (and,
  for dual, the suffix of masked blocks); later steps in the block reuse it. Approximate for bidirectional models;
  exact (though slower than "exact") for causal and block-causal ones, whose blocks never see later columns.
- "none": every step recomputes the whole context (up to the current block; the whole canvas when bidirectional).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from blockgen.errors import BlockgenError, InvalidArgumentError
from blockgen.models.attention import AttentionKind
from blockgen.models.cache import KVCache
from blockgen.models.decoder import Decoder
from blockgen.models.family import Family

CACHE_MODES = ("auto", "exact", "prefix", "dual", "none")


@dataclass(frozen=True)
class DecodeSettings:
    max_new_tokens: int
    block_size: int
    steps: int  # refinement steps per block given to the scheduler
    cache: str = "auto"
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0  # CTRL: logits of tokens already in the row (prompt + committed) / p (or * p if < 0)
    penalty_scope: str = "context"  # "context": prompt and generated tokens (as transformers); "generated": only these
    stop_token_ids: tuple[int, ...] = ()
    max_post_steps: int = 16  # extra passes after a block's masks are gone, while editing changes tokens
    generator: torch.Generator | None = None
    extend_context: bool = False  # allow positions past the trained length (the caller chose an NTK factor)


@dataclass
class StepEvent:
    """One forward pass and the scheduler step that followed it."""

    block: int
    step: int
    forward_tokens: int  # tokens the model ran on (per row)
    committed: int  # masked positions filled, all rows together
    edited: int  # committed positions replaced (editing)
    stable: dict[int, list[int]] = field(default_factory=dict)  # row -> generated tokens that can no longer change


@dataclass
class BlockEvent:
    block: int
    rows: list[int]


@dataclass
class FinishEvent:
    row: int
    tokens: list[int]
    reason: str  # "stop" | "length"


Event = StepEvent | BlockEvent | FinishEvent


def resolve_cache(mode: str, family: Family) -> str:
    if mode not in CACHE_MODES:
        raise InvalidArgumentError("cache", mode, f"must be one of {CACHE_MODES}")
    bidirectional = family.attention is AttentionKind.BIDIRECTIONAL
    if mode == "auto":
        return "dual" if bidirectional else "exact"
    if mode == "exact" and bidirectional:
        raise InvalidArgumentError("cache", mode, "a bidirectional model has no exact KV cache; use 'none' "
                                   "(exact, uncached) or 'prefix' / 'dual' (approximate)")
    return mode


class _Batch:
    """Per-row tensors and bookkeeping of the canvas; rows leave as they finish."""

    def __init__(self, prompts: list[list[int]], s: DecodeSettings, family: Family, device, fill: int):
        bsz, block = len(prompts), s.block_size
        lengths = torch.tensor([len(p) for p in prompts])
        absolute = family.attention is not AttentionKind.BIDIRECTIONAL
        first = (lengths // block) * block if absolute else lengths  # position where generation block 0 starts
        self.start_col = int(first.max())  # column where generation block 0 starts
        offsets = self.start_col - first  # left padding of each row
        self.gen_start = offsets + lengths  # first generated column per row
        self.gen_end = self.gen_start + s.max_new_tokens
        n_blocks = -(-(int(self.gen_end.max()) - self.start_col) // block)
        self.width = self.start_col + n_blocks * block
        self.n_blocks = n_blocks
        cols = torch.arange(self.width)
        self.x = torch.full((bsz, self.width), fill, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            self.x[i, int(offsets[i]) : int(self.gen_start[i])] = torch.tensor(prompt, dtype=torch.long)
        self.positions = (cols[None] - offsets[:, None]).clamp(min=0)
        self.valid = (cols[None] >= offsets[:, None]) & (cols[None] < self.gen_end[:, None])
        self.editable = (cols[None] >= self.gen_start[:, None]) & (cols[None] < self.gen_end[:, None])
        self.rows = list(range(bsz))  # original index of each remaining row
        self.x, self.positions, self.valid, self.editable = (
            t.to(device) for t in (self.x, self.positions, self.valid, self.editable)
        )
        self.gen_start, self.gen_end = self.gen_start.tolist(), self.gen_end.tolist()
        self.stable_len = [0] * bsz

    def keep(self, keep: list[int]) -> None:
        index = torch.tensor(keep, device=self.x.device)
        self.x, self.positions, self.valid, self.editable = (
            t.index_select(0, index) for t in (self.x, self.positions, self.valid, self.editable)
        )
        self.rows = [self.rows[i] for i in keep]
        self.gen_start = [self.gen_start[i] for i in keep]
        self.gen_end = [self.gen_end[i] for i in keep]
        self.stable_len = [self.stable_len[i] for i in keep]


def _mask_id(family: Family, s: DecodeSettings) -> int:
    if family.mask_token_id is not None:
        return family.mask_token_id
    if s.block_size == 1 and family.logit_shift:
        return -1  # AR mode: uncommitted positions are never fed to the model, so no real mask token is needed
    raise InvalidArgumentError("block_size", s.block_size, f"this {family.model_type} checkpoint has no mask token, "
                               "so it decodes one token at a time (block_size=1); block diffusion needs an adapted "
                               "checkpoint or a config 'blockgen.mask_token_id'")


def _penalize(logits: torch.Tensor, batch: _Batch, mask_id: int, penalty: float, generated: bool) -> torch.Tensor:
    """CTRL's repetition penalty (as transformers applies it): every token id present in a row's prompt or committed
    text (only its committed text when `generated`) has its logit divided by `penalty` when positive and multiplied
    by it when negative."""
    seen = (batch.editable if generated else batch.valid) & (batch.x >= 0) & (batch.x != mask_id)
    counts = torch.zeros(logits.shape[0], logits.shape[-1], dtype=torch.long, device=logits.device)
    counts.scatter_add_(1, batch.x.clamp(min=0), seen.long())
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(counts[:, None, :] > 0, penalized, logits)


def _check(model: Decoder, family: Family, prompts: list[list[int]], s: DecodeSettings) -> None:
    if not prompts:
        raise InvalidArgumentError("prompts", prompts, "must hold at least one prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise InvalidArgumentError(f"prompts[{i}]", p, "is empty: give at least one token")
    if s.max_new_tokens < 1:
        raise InvalidArgumentError("max_new_tokens", s.max_new_tokens, "must be >= 1")
    if s.block_size < 1:
        raise InvalidArgumentError("block_size", s.block_size, "must be >= 1")
    if s.steps < 1:
        raise InvalidArgumentError("steps", s.steps, "must be >= 1")
    longest = max(len(p) for p in prompts) + s.max_new_tokens + s.block_size
    trained = model.config.max_position_embeddings
    if longest > trained and model.ntk_factor == 1.0 and not s.extend_context:
        raise InvalidArgumentError(
            "max_new_tokens",
            s.max_new_tokens,
            f"prompt + new tokens (up to {longest} positions with block padding) exceed the trained context "
            f"{trained}; shorten them or set an NTK factor (ntk_factor='auto' picks one)",
        )


@torch.inference_mode()
def decode(
    model: Decoder,
    family: Family,
    scheduler,
    prompts: list[list[int]],
    settings: DecodeSettings,
    stop_check: Callable[[int, list[int]], int | None] | None = None,
) -> Iterator[Event]:
    """Yield events while block-diffusion decoding `prompts` (lists of token ids).

    stop_check(row, stable_tokens) may return a length at which that row stops (a stop string was found).
    """
    _check(model, family, prompts, settings)
    s, mask_id, block = settings, _mask_id(family, settings), settings.block_size
    cache_mode = resolve_cache(s.cache, family)
    attention = family.attention_for(block)
    shift = 1 if family.logit_shift else 0
    device = model.device
    fill = s.stop_token_ids[0] if s.stop_token_ids else 0
    batch = _Batch(prompts, s, family, device, fill)
    batch.x[batch.editable] = mask_id
    scheduler.set_timesteps(s.steps, device=device, block_length=block)
    editing_threshold = getattr(scheduler.config, "editing_threshold", None)
    editing = editing_threshold is not None and editing_threshold > 0
    stop_ids = torch.tensor(s.stop_token_ids or [-1], device=device)

    cache = KVCache.for_model(model, len(prompts), batch.width) if cache_mode != "none" else None
    cached_upto = 0  # exact cache: columns [0, cached_upto) are in the cache
    carry = None  # logits at the column before the current block (for logit shift), kept from the block's first pass
    with_block = not (shift and block == 1)  # AR mode: a one-token block's logits come from the column before it

    def run(cols: torch.Tensor, write: bool, need: torch.Tensor):
        """Forward the given columns; logits for the needed columns among them, keyed by column."""
        slot = torch.full((batch.width + 1,), -1, dtype=torch.long, device=device)
        slot[cols] = torch.arange(len(cols), device=device)
        found = need[slot[need] >= 0]
        out = model(
            batch.x[:, cols],
            positions=batch.positions[:, cols],
            attention=attention,
            cache=cache,
            write_cache=write,
            token_mask=batch.valid[:, cols],
            logits_at=slot[found],
        )
        return dict(zip(found.tolist(), out.unbind(1)))

    for k in range(batch.n_blocks):
        lo, hi = batch.start_col + k * block, batch.start_col + (k + 1) * block
        in_block = batch.editable[:, lo:hi]
        carry = None
        post = torch.zeros(len(batch.rows), dtype=torch.long, device=device)  # passes after a row's masks are gone
        mask_steps = torch.zeros_like(post)  # passes while a row still had masks
        active = in_block.any(-1)
        step, timestep = 0, 0  # all passes in this block; passes while any row had masks (the scheduler's clock)
        while bool(active.any()):
            masks_pre = (batch.x[:, lo:hi] == mask_id) & in_block
            has_masks = masks_pre.any(-1)
            post = post + (~has_masks).long()
            # the block positions the scheduler decides on: all with editing, else those still masked in some row
            wanted = (in_block & active[:, None]).any(0) if editing else (masks_pre & active[:, None]).any(0)
            idx = wanted.nonzero().flatten()
            need = lo + idx - shift  # their logits' columns (token i is predicted at i - 1 when shifted)
            need = need[need >= 0]
            # ---- forward: which columns run, and whether their keys/values are kept
            if cache_mode == "exact":
                end = hi if with_block else lo
                got = run(torch.arange(cached_upto, end, device=device), True, need)
                if with_block:
                    cache.trim(lo)
                forward_tokens, cached_upto = end - cached_upto, lo
            elif cache_mode == "none":
                end = batch.width if attention.kind is AttentionKind.BIDIRECTIONAL else (hi if with_block else lo)
                got, forward_tokens = run(torch.arange(0, end, device=device), False, need), end
            elif step == 0:  # prefix / dual: refresh the cache with a full pass at the block start
                cache.trim(0)
                cols = torch.arange(batch.width, device=device)
                if cache_mode == "dual":  # order: prefix, suffix, block; bidirectional attention ignores order
                    cols = torch.cat((cols[:lo], cols[hi:], cols[lo:hi]))
                got, forward_tokens = run(cols, True, need), batch.width
                cache.trim(lo if cache_mode == "prefix" else batch.width - block)
            else:
                cols = torch.arange(lo, batch.width if cache_mode == "prefix" else hi, device=device)
                got, forward_tokens = run(cols, False, need), len(cols)
            if shift and lo - 1 in got:  # later passes that skip column lo - 1 (it is cached) reuse it
                carry = got[lo - 1]
            columns = [got[c] if c in got else carry for c in (lo + idx - shift).tolist()]
            if any(c is None for c in columns):  # only a frozen first column can lack its logits
                zeros = torch.zeros(len(batch.rows), model.config.vocab_size, device=device, dtype=model.dtype)
                columns = [zeros if c is None else c for c in columns]
            logits = torch.stack(columns, dim=1)  # (B, len(idx), V)
            if s.repetition_penalty != 1.0:
                logits = _penalize(logits, batch, mask_id, s.repetition_penalty, s.penalty_scope == "generated")
            if mask_id >= 0:  # the mask token is never a prediction
                logits[..., mask_id] = float("-inf")
            # ---- scheduler step on those positions; only editable positions of active rows may change
            sample = batch.x[:, lo + idx]
            result = scheduler.step(
                logits,
                timestep,
                sample,
                mask_token_id=mask_id,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                generator=s.generator,
                prompt_mask=None,
                return_dict=True,
            )
            allowed = in_block[:, idx] & active[:, None]
            transfer = result.transfer_index & allowed & masks_pre[:, idx]
            edits = result.editing_transfer_index & allowed & ~masks_pre[:, idx]
            batch.x[:, lo + idx] = torch.where(transfer | edits, result.sampled_tokens, sample)
            masks_after = ((batch.x[:, lo:hi] == mask_id) & in_block).any(-1)
            if bool((has_masks & active & ~transfer.any(-1)).any()) and step > 4 * max(block, s.steps):
                raise BlockgenError(f"{type(scheduler).__name__} committed nothing in block {k} after {step} steps")
            mask_steps = mask_steps + has_masks.long()
            timestep += int(bool((has_masks & active).any()))
            # Go on while masks remain; with editing, also for passes that still change tokens (the first pass after
            # the last commit runs regardless, unless the step budget is spent), as LLaDA2.1's loop does.
            active = active & (
                masks_after
                | (editing & has_masks & (mask_steps < s.steps))
                | (editing & ~has_masks & edits.any(-1) & (post <= s.max_post_steps))
            )
            event = StepEvent(k, step, forward_tokens, int(transfer.sum()), int(edits.sum()))
            finished = _settle(batch, event, mask_id, stop_ids, lo, active, editing, stop_check)
            yield event
            step += 1
            if finished:
                for i, reason, tokens in finished:
                    yield FinishEvent(batch.rows[i], tokens, reason)
                keep = _drop(batch, cache, [f[0] for f in finished])
                if not keep:
                    return
                carry = carry[keep] if carry is not None else None
                active, post, mask_steps = active[keep], post[keep], mask_steps[keep]
                in_block = batch.editable[:, lo:hi]
        yield BlockEvent(k, list(batch.rows))
        done = [i for i in range(len(batch.rows)) if batch.gen_end[i] <= hi]  # reached max_new_tokens
        for i in done:
            yield FinishEvent(batch.rows[i], batch.x[i, batch.gen_start[i] : batch.gen_end[i]].tolist(), "length")
        if done:
            keep = _drop(batch, cache, done)
            if not keep:
                return
            carry = carry[keep] if carry is not None else None


def _drop(batch: _Batch, cache: KVCache | None, rows: list[int]) -> list[int]:
    """Remove finished rows from the batch and the cache; return the kept row indices."""
    keep = [i for i in range(len(batch.rows)) if i not in set(rows)]
    if keep:
        batch.keep(keep)
        if cache is not None:
            cache.select_rows(torch.tensor(keep, device=batch.x.device))
    return keep


def _settle(batch: _Batch, event: StepEvent, mask_id: int, stop_ids, block_start: int, active, editing, stop_check):
    """Record each row's stable prefix on the event; return rows that finished: (index, reason, tokens)."""
    finished = []
    for i in range(len(batch.rows)):
        start, end = batch.gen_start[i], batch.gen_end[i]
        generated = batch.x[i, start:end]
        is_mask = generated == mask_id
        # stable: committed and contiguous from the start; while editing may still touch this block, only before it
        limit = int(is_mask.nonzero()[0, 0]) if bool(is_mask.any()) else end - start
        if editing and bool(active[i]):
            limit = min(limit, max(0, block_start - start))
        stops = torch.isin(generated[:limit], stop_ids).nonzero()
        cut = int(stops[0, 0]) if len(stops) else None
        tokens = generated[: limit if cut is None else cut].tolist()
        if cut is None and stop_check is not None and len(tokens) > batch.stable_len[i]:
            cut = stop_check(batch.rows[i], tokens)
            tokens = tokens if cut is None else tokens[:cut]
        if len(tokens) > batch.stable_len[i] or cut is not None:
            batch.stable_len[i] = len(tokens)
            event.stable[batch.rows[i]] = tokens
        if cut is not None:
            finished.append((i, "stop", tokens))
    return finished
