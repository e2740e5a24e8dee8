"""The block-diffusion decode loop: a plain generator over (model, family, scheduler, prompts, settings).

It knows token ids only. Layout: every row's prompt is left-padded so that its first generation block starts at the
same column; blocks then advance column-aligned for the whole batch while each row keeps its own positions. Blocks
are aligned to absolute positions for causal / block-causal families (the prompt's tail shares the first block and is
never edited) and to the prompt's end for bidirectional ones (as LLaDA and Dream decode). `fill` runs the same loop
over canvases: fixed text with masked positions anywhere, one block spanning the canvas (bidirectional families).

Each block runs passes until its rows are done; a pass is three phases:
  1. which columns the model runs, and whether their keys/values are kept (`_plan_pass`, by cache mode);
  2. one block step: logits at the positions the scheduler decides on, the scheduler's commits and edits (`_step`);
     a block-causal checkpoint keeps its trained attention block: a commit block may be a sub-block of it (each pass
     then runs the whole attention block, later sub-blocks still masked) or span several;
  3. settling: each row's stable prefix, stop tokens and stop strings; finished rows retire (`_Rows.retire`).
Between blocks, where a whole attention unit begins, new rows may join (`decode(join=...)`, laid out by
`blockgen.engine.joining`): each as it would be alone, its prompt's keys and values added to the exact cache.

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

from blockgen.engine.joining import JoinRoom, first_block
from blockgen.engine.options import CACHE_MODES, GenerationConfig
from blockgen.engine.sampling import dry_for, penalized
from blockgen.errors import BlockgenError, InvalidArgumentError
from blockgen.models.attention import Attention, AttentionKind
from blockgen.models.cache import KVCache, shifted
from blockgen.models.decoder import Decoder
from blockgen.models.family import Family

MAX_EDIT_PASSES = 16  # passes after a block's masks are gone, while editing still changes tokens


class DecodeSettings:
    """One decode's settings: the options (a validated GenerationConfig) with the block size and the steps per block
    resolved, the stop token ids and the random generator."""

    def __init__(self, max_new_tokens: int, block_size: int, steps: int, *, stop_token_ids: tuple[int, ...] = (),
                 generator: torch.Generator | None = None, attention_block: int | None = None,
                 dry_breaker_ids: frozenset[int] = frozenset(), **options):
        self.options = GenerationConfig.build(max_new_tokens=max_new_tokens, block_size=block_size, steps=steps,
                                              **options)
        self.stop_token_ids = tuple(stop_token_ids)
        self.dry_breaker_ids = frozenset(dry_breaker_ids)  # DRY's breakers as token ids
        self.generator = generator
        self.attention_block = attention_block  # None: the family's (block-causal), none (other kinds)

    @property
    def max_new_tokens(self) -> int:
        return self.options.max_new_tokens

    @property
    def block_size(self) -> int:
        return self.options.block_size

    @property
    def steps(self) -> int:
        return self.options.steps

    @property
    def extend_context(self) -> bool:
        """Positions past the trained length are allowed: the caller chose an NTK factor."""
        return self.options.ntk_factor is not None


@dataclass
class StepEvent:
    """One forward pass and the scheduler step that followed it."""

    block: int
    step: int
    forward_tokens: int  # tokens the model ran on (per row)
    committed: int  # masked positions filled, all rows together
    edited: int  # committed positions replaced (editing)
    stable: dict[int, list[int]] = field(default_factory=dict)  # row -> generated tokens that can no longer change
    rows: list[int] | None = None  # the rows this pass ran (None: every row still decoding)


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
    if mode in ("prefix", "dual") and family.mask_token_id is None:
        raise InvalidArgumentError("cache", mode, f"this {family.model_type} checkpoint has no mask token; "
                                   f"'{mode}' refreshes its cache over a masked block: use 'auto' or 'exact'")
    return mode


@dataclass(frozen=True)
class _Span:
    """The columns [start, end) of block `index`."""

    index: int
    start: int
    end: int


class _Rows:
    """Every per-row piece of state of the batch; rows retire (all their state at once) as they finish, and may join
    at block boundaries (`extend`, after `reframe` made room).

    Canvas: token ids per row; `editable` marks the positions the model writes. `gen_start` / `gen_end` bound what a
    row returns, `first_col` is its first valid column. Per block: `active` (still refining), passes with and after
    masks, and the logits at the column before the block (a shifted model predicts the block's first token there;
    later passes may not rerun it)."""

    def __init__(self, x, positions, valid, editable, gen_start, gen_end, first_col, start_col: int, span: int):
        self.x, self.positions, self.valid, self.editable = x, positions, valid, editable
        self.ids = list(range(x.shape[0]))  # each remaining row's index in the caller's batch
        self.gen_start, self.gen_end, self.first_col = gen_start, gen_end, first_col
        self.stable: list[list[int]] = [[] for _ in range(x.shape[0])]  # each row's settled tokens (they only grow)
        self.start_col, self.span = start_col, span  # block i starts at start_col + i * span
        self.width = x.shape[1]
        self.begin_block(_Span(0, start_col, start_col + span))

    @staticmethod
    def _place(prompts: list[list[int]], pads: list[int], max_new: list[int], width: int, mask_id: int, fill: int):
        """Rows of `width` columns: each prompt after its pad, then its max_new masked positions."""
        lengths = torch.tensor([len(p) for p in prompts])
        pad = torch.tensor(pads)
        gen_start = pad + lengths
        gen_end = gen_start + torch.tensor(max_new)
        cols = torch.arange(width)
        x = torch.full((len(prompts), width), fill, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            x[i, pads[i] : int(gen_start[i])] = torch.tensor(prompt, dtype=torch.long)
        positions = (cols[None] - pad[:, None]).clamp(min=0)
        valid = (cols[None] >= pad[:, None]) & (cols[None] < gen_end[:, None])
        editable = (cols[None] >= gen_start[:, None]) & (cols[None] < gen_end[:, None])
        x[editable] = mask_id
        return (x, positions, valid, editable), gen_start.tolist(), gen_end.tolist()

    @classmethod
    def from_prompts(cls, prompts: list[list[int]], s: DecodeSettings, family: Family, device, mask_id: int, fill: int,
                     align: int | None = None):
        """Prompts left-padded so generation starts at one column; each row then has max_new_tokens masked.
        align: the unit block starts align to (absolute positions; default the commit block)."""
        block = s.block_size
        align = align or block
        absolute = family.attention is not AttentionKind.BIDIRECTIONAL
        first = [first_block(len(p), align, absolute) for p in prompts]
        start_col = max(first)
        pads = [start_col - f for f in first]
        n_blocks = -(-max(pads[i] + len(p) + s.max_new_tokens - start_col for i, p in enumerate(prompts)) // block)
        tensors, gen_start, gen_end = cls._place(prompts, pads, [s.max_new_tokens] * len(prompts),
                                                 start_col + n_blocks * block, mask_id, fill)
        return cls(*(t.to(device) for t in tensors), gen_start, gen_end, pads, start_col, block)

    def reframe(self, left: int, width: int, fill: int) -> None:
        """Shift every column by `left` (that many empty columns in front when positive, the first -left dropped when
        negative), then cut or pad on the right to `width` columns."""
        self.x, self.positions = shifted(self.x, 1, left, width, fill), shifted(self.positions, 1, left, width)
        self.valid, self.editable = (shifted(t, 1, left, width, False) for t in (self.valid, self.editable))
        for name in ("gen_start", "gen_end", "first_col"):
            setattr(self, name, [c + left for c in getattr(self, name)])
        self.start_col += left
        self.width = width

    def extend(self, prompts: list[list[int]], max_new: list[int], pads: list[int], ids: list[int], mask_id: int,
               fill: int) -> None:
        """Rows joining the batch (before a block begins): each prompt after its pad, then its masked positions."""
        tensors, gen_start, gen_end = self._place(prompts, pads, max_new, self.width, mask_id, fill)
        x, positions, valid, editable = (t.to(self.x.device) for t in tensors)
        self.x, self.positions = torch.cat((self.x, x)), torch.cat((self.positions, positions))
        self.valid, self.editable = torch.cat((self.valid, valid)), torch.cat((self.editable, editable))
        self.ids += ids
        self.gen_start += gen_start
        self.gen_end += gen_end
        self.first_col += pads
        self.stable += [[] for _ in ids]

    @classmethod
    def from_canvas(cls, canvas: list[int], device, mask_id: int):
        """One row whose masked positions are written; everything else is fixed. One block spans the canvas."""
        x = torch.tensor([canvas], dtype=torch.long, device=device)
        width = len(canvas)
        positions = torch.arange(width, device=device)[None]
        valid = torch.ones_like(x, dtype=torch.bool)
        return cls(x, positions, valid, x == mask_id, [0], [width], [0], 0, width)

    def begin_block(self, span: _Span) -> None:
        self.block = span
        self.in_block = self.editable[:, span.start : span.end]
        self.active = self.in_block.any(-1)
        self.any_active = bool(self.active.any())  # read on the host once per pass (see _Loop._pass)
        self.passes_after_masks = torch.zeros(len(self.ids), dtype=torch.long, device=self.x.device)
        self.passes_with_masks = torch.zeros_like(self.passes_after_masks)
        self.logits_before_block: torch.Tensor | None = None

    def block_masks(self, mask_id: int) -> torch.Tensor:
        """(B, span) bool: the block's positions still masked."""
        return (self.x[:, self.block.start : self.block.end] == mask_id) & self.in_block

    def generated(self, i: int) -> torch.Tensor:
        return self.x[i, self.gen_start[i] : self.gen_end[i]]

    def retire(self, finished: list[int], cache: KVCache | None) -> bool:
        """Drop the finished rows (by current index) from every piece of state and the cache; False when none is
        left."""
        keep = [i for i in range(len(self.ids)) if i not in set(finished)]
        if not keep:
            return False
        index = torch.tensor(keep, device=self.x.device)
        for name in ("x", "positions", "valid", "editable", "in_block", "active", "passes_after_masks",
                     "passes_with_masks"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        if self.logits_before_block is not None:
            self.logits_before_block = self.logits_before_block.index_select(0, index)
        self.any_active = bool(self.active.any())
        for name in ("ids", "gen_start", "gen_end", "first_col", "stable"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        if cache is not None:
            cache.select_rows(keep)
        return True


def _mask_id(family: Family, s: DecodeSettings) -> int:
    if family.mask_token_id is not None:
        return family.mask_token_id
    if s.block_size == 1 and family.logit_shift:
        return -1  # AR mode: uncommitted positions are never fed to the model, so no real mask token is needed
    raise InvalidArgumentError("block_size", s.block_size, f"this {family.model_type} checkpoint has no mask token, "
                               "so it decodes one token at a time (block_size=1); block diffusion needs an adapted "
                               "checkpoint or a config 'blockgen.mask_token_id'")


def _penalize(logits: torch.Tensor, rows: _Rows, mask_id: int, penalty: float, generated: bool) -> torch.Tensor:
    """CTRL's repetition penalty (as transformers applies it): every token id present in a row's prompt or committed
    text (only its committed text when `generated`) has its logit divided by `penalty` when positive and multiplied
    by it when negative."""
    seen = (rows.editable if generated else rows.valid) & (rows.x >= 0) & (rows.x != mask_id)
    counts = torch.zeros(logits.shape[0], logits.shape[-1], dtype=torch.long, device=logits.device)
    counts.scatter_add_(1, rows.x.clamp(min=0), seen.long())
    return penalized(logits, counts[:, None, :] > 0, penalty)


def _dry(logits: torch.Tensor, rows: _Rows, offsets: torch.Tensor, masked: torch.Tensor, s: DecodeSettings) -> None:
    """DRY's penalties, in place, at each active row's first masked position of the block (`masked`: (B, P), the
    positions at `offsets` still masked before this pass): the one position whose text before it is all known (in
    AR decoding, the next token). The history is the text before that position that the repetition penalty's scope
    takes (prompt and committed text, or committed text only). The rows are read to the host in one go and the
    penalties written back in one."""
    if offsets.numel() == 0:
        return
    block = rows.block
    first = masked.long().argmax(-1)
    wanted = masked.any(-1) & rows.active
    scope = rows.editable if s.options.penalty_scope == "generated" else rows.valid
    end = block.start + int(offsets.max()) + 1
    x, seen, first, wanted, offsets = (t.cpu() for t in (rows.x[:, :end], scope[:, :end] & (rows.x[:, :end] >= 0),
                                                         first, wanted, offsets))
    where, amounts = [], []
    for i in wanted.nonzero().flatten().tolist():
        at = int(first[i])
        column = block.start + int(offsets[at])
        history = x[i, :column][seen[i, :column]].tolist()
        for token, amount in dry_for(history, s.options, s.dry_breaker_ids).items():
            where.append((i, at, token))
            amounts.append(amount)
    if where:
        index = torch.tensor(where, device=logits.device).T
        logits.index_put_(tuple(index), -torch.tensor(amounts, dtype=logits.dtype, device=logits.device),
                          accumulate=True)


def attention_block(family: Family, commit: int, size: int | None = None) -> int | None:
    """The attention block of a block-causal family (`size`, by default its checkpoint's, fixed by training; None
    for other kinds), checked against the commit block: one must divide the other (sub-blocks inside an attention
    block, as Fast-dLLM v2 decodes, or commit blocks spanning whole attention blocks)."""
    if family.attention is not AttentionKind.BLOCK_CAUSAL:
        return None
    size = size or family.block_size
    if size % commit and commit % size:
        raise InvalidArgumentError("block_size", commit, f"must divide or be a multiple of the checkpoint's attention "
                                   f"block {size} (block-causal attention is fixed by training)")
    return size


def trained_length(model: Decoder, family: Family) -> int:
    """The context the checkpoint was trained at: its family's record, else the config's max_position_embeddings."""
    return family.trained_length or model.config.max_position_embeddings


def ntk_factor(model: Decoder, family: Family, s: DecodeSettings, positions: int) -> float | None:
    """This decode's RoPE NTK factor for a context of `positions`: the option's number, the extrapolation law's
    for 'auto' (1.0 within the trained length, above 1.0 past it), or None (the model's own)."""
    option = s.options.ntk_factor
    if option == "auto":
        return model.ntk_factor_for(positions, trained_length(model, family))
    return option


def _check(model: Decoder, family: Family, prompts: list[list[int]], s: DecodeSettings, unit: int) -> None:
    if not prompts:
        raise InvalidArgumentError("prompts", prompts, "must hold at least one prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise InvalidArgumentError(f"prompts[{i}]", p, "is empty: give at least one token")
    longest = max(len(p) for p in prompts) + s.max_new_tokens + unit
    if _past_trained(model, family, s, longest):
        raise InvalidArgumentError(
            "max_new_tokens",
            s.max_new_tokens,
            f"prompt + new tokens (up to {longest} positions with block padding) exceed the trained context "
            f"{trained_length(model, family)}; shorten them or set an NTK factor (ntk_factor='auto' picks one)",
        )


def _past_trained(model: Decoder, family: Family, s: DecodeSettings, positions: int) -> bool:
    """Whether `positions` run past the trained context with nothing that allows it (an NTK factor)."""
    return positions > trained_length(model, family) and model.ntk_factor == 1.0 and not s.extend_context


@dataclass(frozen=True)
class _Pass:
    """Phase 1 of a pass: the columns the model runs (in order, known on the host: a range, or a list when they are
    not one ascending run), whether their keys/values are written to the cache, and the cache lengths to trim to
    before and after it."""

    order: range | list[int]
    write: bool
    trim_before: int | None = None
    trim_after: int | None = None

    @property
    def start(self) -> int | None:
        """The first column when the columns are one ascending run (else None)."""
        return self.order.start if isinstance(self.order, range) else None

    def index(self, column: int) -> int | None:
        """Where `column` sits in the pass (None when the pass does not run it)."""
        if isinstance(self.order, range):
            return column - self.order.start if column in self.order else None
        return self.order.index(column) if column in self.order else None


class _Loop:
    """One decode: the settings, the model and its cache, and the rows; `blocks()` yields the events."""

    def __init__(self, model: Decoder, family: Family, scheduler, rows: _Rows, s: DecodeSettings, mask_id: int,
                 attention: Attention, stop_check, ntk_factor: float | None = None, unit: int | None = None,
                 join=None, join_width: int | None = None, fill: int = 0):
        self.model, self.scheduler, self.rows, self.s, self.mask_id = model, scheduler, rows, s, mask_id
        self.family, self.join, self.fill = family, join, fill
        self.join_width, self._next_id = join_width, len(rows.ids)  # joined rows take the next ids
        self.unit = unit or rows.span  # a forward covers the whole attention block(s) the commit block lies in
        self.ntk_factor = ntk_factor  # this decode's RoPE factor (None: the model's own); no state on the model
        self.attention, self.stop_check = attention, stop_check
        self.cache_mode = resolve_cache(s.options.cache, family)
        self.shift = 1 if family.logit_shift else 0
        self.device = model.device
        self.cache = KVCache.for_model(model, len(rows.ids), rows.width) if self.cache_mode != "none" else None
        self.cached_upto = 0  # exact cache: columns [0, cached_upto) are in the cache
        # AR mode: a one-token block's logits come from the column before it, so the block itself never runs
        self.runs_block = not (self.shift and self.unit == 1)
        editing_threshold = getattr(scheduler.config, "editing_threshold", None)
        self.editing = editing_threshold is not None and editing_threshold > 0
        self.stop_ids = torch.tensor(s.stop_token_ids or [-1], device=self.device)
        scheduler.set_timesteps(s.steps, device=self.device, block_length=rows.span)

    def blocks(self) -> Iterator[Event]:
        rows = self.rows
        index, start = 0, rows.start_col
        while start < rows.width:
            rows.begin_block(_Span(index, start, start + rows.span))
            scheduler_clock = 0  # passes while any row still had masks
            step = 0
            while rows.any_active:
                masks_before = rows.block_masks(self.mask_id)
                event, ticked = self._pass(step, scheduler_clock, masks_before)
                scheduler_clock += ticked
                finished = self._settle(event)
                yield event
                step += 1
                if finished:
                    for i, reason, tokens in finished:
                        yield FinishEvent(rows.ids[i], tokens, reason)
                    if not rows.retire([i for i, _, _ in finished], self.cache):
                        return
            yield BlockEvent(index, list(rows.ids))
            reached = [i for i in range(len(rows.ids)) if rows.gen_end[i] <= rows.block.end]  # max_new_tokens
            for i in reached:
                yield FinishEvent(rows.ids[i], rows.generated(i).tolist(), "length")
            if reached and not rows.retire(reached, self.cache):
                return
            index, start = index + 1, start + rows.span
            if self.join is not None and (start - rows.start_col) % self.unit == 0:
                start = self._admit(start)

    # ---- rows joining at a block boundary
    def _admit(self, column: int) -> int:
        """Offer room to the join callback at this boundary; lay out the rows it returns (and drop the columns no row
        needs any more). Returns the boundary's column after the shift."""
        rows, model, family, exact = self.rows, self.model, self.family, self.cache_mode == "exact"
        room = JoinRoom(column=column, width=rows.width, span=rows.span, unit=self.unit,
                        absolute=family.attention is not AttentionKind.BIDIRECTIONAL, rows=len(rows.ids),
                        lowest=min(rows.first_col), frozen=self.cached_upto if exact else column,
                        max_width=max(rows.width, self.join_width or trained_length(model, family) + self.unit),
                        fits_context=self._fits_context)
        joining = list(self.join(room))
        if [(len(p), n) for p, n in joining] != room.taken:
            raise BlockgenError("the join callback must return the rows whose room it took, in order")
        layout = room.layout()
        if layout.shift == 0 and layout.width == rows.width and not joining:
            return column
        rows.reframe(layout.shift, layout.width, self.fill)
        if exact:
            self.cache.reframe(layout.shift, rows.width)
            self.cached_upto += layout.shift
        if joining:
            ids = list(range(self._next_id, self._next_id + len(joining)))
            self._next_id += len(joining)
            new = len(rows.ids)
            rows.extend([p for p, _ in joining], [n for _, n in joining], list(layout.pads), ids, self.mask_id,
                        self.fill)
            if exact:
                self.cache.add_rows(self._prefill(new, min(layout.pads)))
        if self.cache is not None and not exact:  # prefix / dual refresh the whole cache at the next block's start
            self.cache = KVCache.for_model(model, len(rows.ids), rows.width)
        return column + layout.shift

    def _prefill(self, new: int, lo: int) -> KVCache:
        """The cache of the rows from index `new` on (rows that just joined): the columns the batch has cached."""
        rows, hi = self.rows, self.cached_upto
        cache = KVCache.for_model(self.model, len(rows.ids) - new, self.cache.capacity)
        lo = min(lo, hi)
        empty = torch.zeros(len(rows.ids) - new, lo, dtype=torch.long, device=self.device)
        cache.advance(empty, empty.bool())
        if lo < hi:
            self.model.hidden_states(rows.x[new:, lo:hi], positions=rows.positions[new:, lo:hi],
                                     attention=self.attention, cache=cache, write_cache=True,
                                     token_mask=rows.valid[new:, lo:hi], ntk_factor=self.ntk_factor)
        return cache

    def _fits_context(self, length: int) -> bool:
        """Whether a row needing `length` positions decodes here as it would alone: within the context this decode
        allows, under the same RoPE factor."""
        model, family, s = self.model, self.family, self.s
        return (not _past_trained(model, family, s, length)
                and ntk_factor(model, family, s, length) == self.ntk_factor)

    # ---- phase 1: which columns run
    def _span(self) -> tuple[int, int]:
        """The columns [lo, hi) a pass must run for the current commit block: the block itself, or the attention
        block that holds it when commit blocks are sub-blocks (later sub-blocks' masks are attended too)."""
        rows = self.rows
        block = rows.block
        if self.unit <= rows.span:
            return block.start, block.end
        lo = rows.start_col + (block.start - rows.start_col) // self.unit * self.unit
        return lo, min(lo + self.unit, rows.width)

    def _plan_pass(self, step: int) -> _Pass:
        block, width, mode = self.rows.block, self.rows.width, self.cache_mode
        lo, hi = self._span()
        if mode == "exact":
            end = hi if self.runs_block else block.start
            return _Pass(range(self.cached_upto, end), True, trim_after=lo if self.runs_block else None)
        if mode == "none":
            bidirectional = self.attention.kind is AttentionKind.BIDIRECTIONAL
            end = width if bidirectional else (hi if self.runs_block else block.start)
            return _Pass(range(0, end), False)
        if step == 0:  # prefix / dual: refresh the cache with a full pass at the block start
            # dual's order: prefix, suffix, block (bidirectional attention ignores order)
            order = range(width) if mode == "prefix" or hi == width else [*range(lo), *range(hi, width),
                                                                           *range(lo, hi)]
            return _Pass(order, True, trim_before=0, trim_after=lo if mode == "prefix" else width - (hi - lo))
        return _Pass(range(lo, width if mode == "prefix" else hi), False)

    def _layout(self, plan: _Pass, cached: int) -> bool:
        """Whether the planned columns are laid out as the model assumes when given no positions and no token mask:
        positions continuing `cached` keys, no padding in any row (the mask then follows from the shapes, often none
        at all, and SDPA may pick its fastest kernel)."""
        rows = self.rows
        return (plan.start == cached and not any(rows.first_col)
                and min(rows.gen_end) >= plan.start + len(plan.order))

    def _columns(self, plan: _Pass):
        """The planned columns as an index of the rows' tensors: a slice for one ascending run (a view), else a
        tensor."""
        if plan.start is not None:
            return slice(plan.start, plan.start + len(plan.order))
        return torch.tensor(plan.order, device=self.device)

    def _forward(self, plan: _Pass, wanted: list[int]) -> dict[int, torch.Tensor]:
        """Run the planned columns; the logits (B, V) of each wanted column among them, by column."""
        rows, cache = self.rows, self.cache
        if plan.trim_before is not None:
            cache.trim(plan.trim_before)
        present = [c for c in wanted if plan.index(c) is not None]
        logits_at = torch.tensor([plan.index(c) for c in present], dtype=torch.long, device=self.device)
        columns = self._columns(plan)
        plain = self._layout(plan, cache.length if cache is not None else 0)
        positions, valid = (None, None) if plain else (rows.positions[:, columns], rows.valid[:, columns])
        if self._one_prompt(columns):  # e.g. a writer's candidates: the shared prompt runs once
            single = KVCache.for_model(self.model, 1, cache.capacity)
            out = self.model(rows.x[:1, columns], positions=None if plain else positions[:1],
                             attention=self.attention, cache=single, write_cache=True,
                             token_mask=None if plain else valid[:1], logits_at=logits_at,
                             ntk_factor=self.ntk_factor)
            cache.fill_from(single)
            out = out.expand(len(rows.ids), *out.shape[1:]).contiguous()
        else:
            out = self.model(rows.x[:, columns], positions=positions, attention=self.attention, cache=cache,
                             write_cache=plan.write, token_mask=valid, logits_at=logits_at,
                             ntk_factor=self.ntk_factor)
        if plan.trim_after is not None:
            cache.trim(plan.trim_after)
        if self.cache_mode == "exact":
            self.cached_upto = self._span()[0]
        return dict(zip(present, out.unbind(1)))

    def _one_prompt(self, columns) -> bool:
        """Whether this is the exact cache's first pass over rows that are one and the same (tokens, positions and
        padding alike), so one row's pass stands for all."""
        rows = self.rows
        if self.cache_mode != "exact" or self.cache.length or len(rows.ids) < 2:
            return False
        return all(bool((t[:, columns] == t[:1, columns]).all()) for t in (rows.x, rows.positions, rows.valid))

    # ---- phase 2: one block step
    def _pass(self, step: int, clock: int, masks_before: torch.Tensor) -> tuple[StepEvent, int]:
        rows, s, block, mask_id = self.rows, self.s, self.rows.block, self.mask_id
        has_masks = masks_before.any(-1)
        rows.passes_after_masks = rows.passes_after_masks + (~has_masks).long()
        # the block positions the scheduler decides on: all with editing, else those still masked in some row
        candidates = rows.in_block if self.editing else masks_before
        offsets = (candidates & rows.active[:, None]).any(0).nonzero().flatten()
        # token i is predicted at column i - 1 when shifted; the columns are read on the host once
        predicted_at = [block.start + o - self.shift for o in offsets.tolist()]
        plan = self._plan_pass(step)
        logits_by_column = self._forward(plan, [c for c in predicted_at if c >= 0])
        if self.shift and block.start - 1 in logits_by_column:  # later passes that skip it (it is cached) reuse it
            rows.logits_before_block = logits_by_column[block.start - 1]
        logits = self._gather(logits_by_column, predicted_at)
        if s.options.repetition_penalty != 1.0:
            logits = _penalize(logits, rows, mask_id, s.options.repetition_penalty,
                               s.options.penalty_scope == "generated")
        if s.options.dry_multiplier:
            _dry(logits, rows, offsets, masks_before[:, offsets], s)
        if mask_id >= 0:  # the mask token is never a prediction
            logits[..., mask_id] = float("-inf")
        # only editable positions of active rows may change: masked ones by commits, committed ones by edits
        current = rows.x[:, block.start + offsets]
        result = self.scheduler.step(logits, clock, current, mask_token_id=mask_id, temperature=s.options.temperature,
                                     top_k=s.options.top_k, top_p=s.options.top_p, generator=s.generator,
                                     prompt_mask=None, return_dict=True)
        allowed = rows.in_block[:, offsets] & rows.active[:, None]
        commits = result.transfer_index & allowed & masks_before[:, offsets]
        edits = result.editing_transfer_index & allowed & ~masks_before[:, offsets]
        rows.x[:, block.start + offsets] = torch.where(commits | edits, result.sampled_tokens, current)
        masks_after = rows.block_masks(mask_id).any(-1)
        stalled = (has_masks & rows.active & ~commits.any(-1)).any()
        rows.passes_with_masks = rows.passes_with_masks + has_masks.long()
        ticked = (has_masks & rows.active).any()
        # Go on while masks remain; with editing, also for passes that still change tokens (the first pass after
        # the last commit runs regardless, unless the step budget is spent), as LLaDA2.1's loop does.
        rows.active = rows.active & (
            masks_after
            | (self.editing & has_masks & (rows.passes_with_masks < s.steps))
            | (self.editing & ~has_masks & edits.any(-1) & (rows.passes_after_masks <= MAX_EDIT_PASSES))
        )
        # everything the host needs from this step, read in one go
        committed, edited, stalled, ticked, rows.any_active = torch.stack(
            (commits.sum(), edits.sum(), stalled.long(), ticked.long(), rows.active.any().long())).tolist()
        if stalled and step > 4 * max(rows.span, s.steps):
            raise BlockgenError(f"{type(self.scheduler).__name__} committed nothing in block {block.index} after "
                                f"{step} steps")
        return StepEvent(block.index, step, len(plan.order), committed, edited), ticked

    def _gather(self, logits_by_column: dict[int, torch.Tensor], columns: list[int]) -> torch.Tensor:
        """(B, len(columns), V): the logits of each column; the column before the block from an earlier pass when
        this one did not run it; zeros for a column no pass ran (only a frozen first column can lack them)."""
        rows = self.rows
        picked = [logits_by_column.get(c, rows.logits_before_block) for c in columns]
        if any(p is None for p in picked):
            zeros = torch.zeros(len(rows.ids), self.model.config.vocab_size, device=self.device,
                                dtype=self.model.dtype)
            picked = [zeros if p is None else p for p in picked]
        return torch.stack(picked, dim=1)

    # ---- phase 3: settling
    def _settle(self, event: StepEvent) -> list[tuple[int, str, list[int]]]:
        """Record each row's stable prefix on the event; return the rows that finished: (index, reason, tokens).

        Stable: committed and contiguous from the start of the row's answer (while editing may still touch this
        block, only what comes before it), up to its first stop token. Decided for all rows at once on the device;
        the host reads two numbers per row and the newly settled tokens."""
        rows, finished = self.rows, []
        device = rows.x.device
        start = torch.tensor(rows.gen_start, device=device)
        end = torch.tensor(rows.gen_end, device=device)
        cols = torch.arange(rows.width, device=device)[None]
        inside = (cols >= start[:, None]) & (cols < end[:, None])
        limit = torch.where(inside & (rows.x == self.mask_id), cols, end[:, None]).amin(-1)  # first mask, else end
        if self.editing:
            limit = torch.where(rows.active, torch.minimum(limit, start.clamp(min=rows.block.start)), limit)
        stops = inside & (cols < limit[:, None]) & torch.isin(rows.x, self.stop_ids)
        cut = torch.where(stops, cols, end[:, None]).amin(-1)  # first stop token, else end
        limits, cuts = torch.stack((limit, cut)).tolist()
        upto = [min(a, b) for a, b in zip(limits, cuts)]
        grown = [i for i in range(len(rows.ids)) if upto[i] - rows.gen_start[i] > len(rows.stable[i])]
        slab, lo = [], 0
        if grown:  # the newly settled tokens of every row, read in one go
            lo = min(rows.gen_start[i] + len(rows.stable[i]) for i in grown)
            slab = rows.x[:, lo : max(upto[i] for i in grown)].tolist()
        for i in range(len(rows.ids)):
            tokens, stop = rows.stable[i], cuts[i] < limits[i]
            if i in grown:
                tokens = tokens + slab[i][rows.gen_start[i] + len(tokens) - lo : upto[i] - lo]
            cut_at = len(tokens) if stop else None
            if not stop and self.stop_check is not None and len(tokens) > len(rows.stable[i]):
                cut_at = self.stop_check(rows.ids[i], tokens)
                tokens = tokens if cut_at is None else tokens[:cut_at]
            if len(tokens) > len(rows.stable[i]) or cut_at is not None:
                rows.stable[i] = tokens
                event.stable[rows.ids[i]] = tokens
            if cut_at is not None:
                finished.append((i, "stop", tokens))
        return finished


@torch.inference_mode()
def decode(
    model: Decoder,
    family: Family,
    scheduler,
    prompts: list[list[int]],
    settings: DecodeSettings,
    stop_check: Callable[[int, list[int]], int | None] | None = None,
    join: Callable[[JoinRoom], list[tuple[list[int], int]]] | None = None,
    join_width: int | None = None,
) -> Iterator[Event]:
    """Yield events while block-diffusion decoding `prompts` (lists of token ids).

    stop_check(row, stable_tokens) may return a length at which that row stops (a stop string was found).
    join(room), called at each boundary of the attention unit, returns rows that join the batch there: (prompt,
    max_new_tokens) pairs whose room it took with `room.take` (see `JoinRoom`). Joined rows take the next row ids
    (len(prompts), then on) and decode as they would alone; the batch stays within `join_width` columns (default the
    trained context plus one block).
    """
    if family.gated:  # a drafting adapter: the base writes, the masks draft (blockgen.engine.drafting)
        from blockgen.engine.drafting import draft_decode

        if join is not None:
            raise InvalidArgumentError("join", "rows joining", "a gated adapter's drafting loop decodes its rows "
                                       "one after another; rows cannot join it")
        yield from draft_decode(model, family, prompts, settings, stop_check)
        return
    settings.attention_block = attention_block(family, settings.block_size, settings.attention_block)
    unit = max(settings.block_size, settings.attention_block or 1)  # the span a forward must cover
    _check(model, family, prompts, settings, unit)
    mask_id = _mask_id(family, settings)
    fill = settings.stop_token_ids[0] if settings.stop_token_ids else 0
    rows = _Rows.from_prompts(prompts, settings, family, model.device, mask_id, fill, unit)
    factor = ntk_factor(model, family, settings, max(len(p) for p in prompts) + settings.max_new_tokens + unit)
    loop = _Loop(model, family, scheduler, rows, settings, mask_id, family.attention_for(settings.attention_block),
                 stop_check, factor, unit, join=join, join_width=join_width, fill=fill)
    yield from loop.blocks()


@torch.inference_mode()
def fill(model: Decoder, family: Family, scheduler, canvas: list[int], settings: DecodeSettings) -> list[int]:
    """The canvas with every mask token written: one block over the whole canvas, bidirectional attention, the
    scheduler committing across all masked positions at once (LLaDA's loop over one canvas); fixed tokens never
    change. settings: the sampling options (temperature, top-k/p, penalty, generator); its steps bound the passes."""
    if family.attention is not AttentionKind.BIDIRECTIONAL:
        raise InvalidArgumentError("model", family.model_type, "a canvas with masks on both sides of fixed text needs "
                                   "a bidirectional model (causal ones decode slot by slot)")
    mask_id = family.mask_token_id
    if mask_id is None:
        raise InvalidArgumentError("model", family.model_type, "filling a canvas needs a mask token")
    trained = trained_length(model, family)
    if len(canvas) > trained and model.ntk_factor == 1.0 and not settings.extend_context:
        raise InvalidArgumentError("canvas", len(canvas), f"longer than the model's {trained} positions")
    masked = [i for i, t in enumerate(canvas) if t == mask_id]
    if family.logit_shift and masked and masked[0] == 0:
        raise InvalidArgumentError("canvas", "mask at position 0", "a shifted model needs a token before a mask")
    if settings.options.cache != "none":
        raise InvalidArgumentError("cache", settings.options.cache, "a canvas is decoded without a cache: use 'none'")
    rows = _Rows.from_canvas(canvas, model.device, mask_id)
    loop = _Loop(model, family, scheduler, rows, settings, mask_id, Attention(AttentionKind.BIDIRECTIONAL), None,
                 ntk_factor(model, family, settings, len(canvas)))
    for event in loop.blocks():
        if isinstance(event, FinishEvent):
            return event.tokens
    raise BlockgenError("the canvas loop ended without finishing its row")
