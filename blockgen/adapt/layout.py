"""The block-diffusion training layout (BD3-LM / Fast-dLLM v2): a noisy and a clean copy of each sequence in one pass.

A row of length L becomes 2L tokens, [noisy x_t | clean x_0], both at positions 0..L-1. Blocks are aligned to
absolute positions (block b holds positions b*S .. b*S+S-1), as the engine aligns them for block-causal models.

- noisy query in block b sees the noisy keys of block b (bidirectional inside the block) and the clean keys of blocks
  before b;
- clean query in block b sees the clean keys of blocks up to b (block-causal), never a noisy key.

So the noisy copy of block b is denoised from a clean, exactly-cacheable past: the situation of the decode loop, where
finished blocks are frozen and cached. Each row is drawn twice with complementary masks (a position masked in one is
clean in the other), so every position that may be masked is supervised exactly once per pair; a share of the
blocks can be masked instead as a suffix in each copy (`suffix_share`), the pattern the decode loop meets.

Packed rows (several examples in one row, as `collate_packed` lays them out) add a segment id per token: a query
sees only keys of its own segment, positions restart at 0 in each segment, and each segment starts at a multiple of
the block size, so a row's block boundaries are each segment's own.

Targets: with a logit shift (Fast-dLLM v2, AR bases) token i is predicted from position i-1: the noisy copy's i-1
inside a block, the clean copy's i-1 for a block's first token (the last position of the finished block before it,
which is where the decode loop reads that prediction). Without a shift, from the noisy copy's position i.

The gated layout (`gated_batch`, for a drafting adapter: blockgen.models.gate, blockgen.engine.drafting) keeps the
base exact: the clean copy is causal and its positions never open the adapter's gate, so it is the base's own pass;
the noisy copy masks every maskable position, in blocks counted from the start of each answer, and a mask in block b
sees the clean keys before b and the masks of b. Only masks open the gate, and each mask at position i
is trained to draft token i + 1, the token after the one the base writes next: exactly what the drafting loop asks
of the masks it appends after its last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockgen.errors import InvalidArgumentError


def training_mask(length: int, block_size: int, valid: torch.Tensor | None = None,
                  segments: torch.Tensor | None = None) -> torch.Tensor:
    """(B or 1, 1, 2L, 2L) bool attention mask over [noisy | clean] (True = may attend).

    valid: (B, L) bool, False for padding; padded keys are hidden, padded queries see everything (never read).
    segments: (B, L) segment id of each token of a packed row; a query sees keys of its own segment only.
    """
    if block_size < 1:
        raise InvalidArgumentError("block_size", block_size, "must be >= 1")
    device = valid.device if valid is not None else None
    block = torch.arange(length, device=device) // block_size
    q, k = block[:, None], block[None, :]
    noisy_noisy = q == k
    noisy_clean = k < q
    clean_clean = k <= q
    clean_noisy = torch.zeros_like(noisy_noisy)
    mask = torch.cat([torch.cat([noisy_noisy, noisy_clean], 1), torch.cat([clean_noisy, clean_clean], 1)], 0)
    return _within(mask[None], valid, segments)  # (1, 2L, 2L) before


def _within(mask: torch.Tensor, valid: torch.Tensor | None, segments: torch.Tensor | None) -> torch.Tensor:
    """(B, 1, 2L, 2L): `mask` (B or 1, 2L, 2L) over [noisy | clean] with each query kept to its own segment's keys,
    padded keys hidden and padded queries seeing everything (never read)."""
    if segments is not None:
        both = torch.cat([segments, segments], 1)  # (B, 2L)
        mask = mask & (both[:, :, None] == both[:, None, :])
    if valid is not None:
        both = torch.cat([valid, valid], 1)  # (B, 2L)
        mask = (mask & both[:, None, :]) | ~both[:, :, None]
    return mask[:, None]


def _both_copies(positions: torch.Tensor | None, rows: int, length: int, device) -> torch.Tensor:
    """(rows, 2L) positions of the [noisy | clean] stream: the given (rows, L) ones twice, else 0..L-1 twice."""
    if positions is None:
        return torch.arange(length, device=device).repeat(2)[None].expand(rows, 2 * length)
    return torch.cat([positions, positions], 1)


def predictor_index(length: int, block_size: int, logit_shift: bool, device=None) -> torch.Tensor:
    """(L,) index into the 2L stream of the hidden state that predicts token i (-1 where none does: i = 0 with a shift)."""
    i = torch.arange(length, device=device)
    if not logit_shift:
        return i
    first = (i % block_size) == 0
    index = torch.where(first, length + i - 1, i - 1)
    return torch.where(i == 0, torch.full_like(i, -1), index)


def draw_masks(maskable: torch.Tensor, block_size: int, generator: torch.Generator, eps: float = 1e-3,
               suffix_share: float = 0.0) -> torch.Tensor:
    """(2B, L) bool: for each row a mask drawn with one noise level t ~ U(eps, 1) per block, then its complement
    (restricted to maskable positions). maskable: (B, L) bool (False for prompt tokens, padding and position 0).

    suffix_share: the share of blocks masked instead as a suffix, from a cut drawn uniformly in 0..S-1 (at least the
    block's last position masked), in each copy from a cut of its own: the decode loop's pattern, where a block's
    left part is committed and the rest is still masked (a suffix's complement, a masked prefix, never occurs there)."""
    b, length = maskable.shape
    blocks = -(-length // block_size)
    t = eps + (1 - eps) * torch.rand(b, blocks, generator=generator)
    level = t.repeat_interleave(block_size, dim=1)[:, :length].to(maskable.device)
    draw = torch.rand(b, length, generator=generator).to(maskable.device) < level
    first = draw & maskable
    second = maskable & ~first
    if suffix_share > 0:
        suffix = torch.rand(b, blocks, generator=generator) < suffix_share
        cuts = torch.randint(0, block_size, (2, b, blocks), generator=generator)
        inside = (torch.arange(length) % block_size).to(maskable.device)

        def spread(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(block_size, dim=-1)[..., :length].to(maskable.device)

        by_cut = inside >= spread(cuts)  # (2, B, L)
        in_suffix = spread(suffix)
        first = torch.where(in_suffix, by_cut[0] & maskable, first)
        second = torch.where(in_suffix, by_cut[1] & maskable, second)
    return torch.cat([first, second], 0)


@dataclass
class TrainingBatch:
    """One forward's inputs and targets. Rows are the complementary pairs of the source rows."""

    input_ids: torch.Tensor  # (2B, 2L): [noisy | clean]
    positions: torch.Tensor  # (2B, 2L)
    attn_mask: torch.Tensor  # (2B, 1, 2L, 2L)
    target_rows: torch.Tensor  # (N,) row of each supervised token
    target_cols: torch.Tensor  # (N,) index in the 2L stream of the hidden state that predicts it
    targets: torch.Tensor  # (N,) the clean token ids
    masked: torch.Tensor  # (2B, L) which positions were masked ((B, L) in the gated layout)
    gate: torch.Tensor | None = None  # (rows, 2L) where a gated adapter applies (the gated layout's masks)

    @property
    def tokens(self) -> int:
        return int(self.targets.numel())


def build_batch(
    ids: torch.Tensor,
    valid: torch.Tensor,
    maskable: torch.Tensor,
    *,
    block_size: int,
    mask_token_id: int,
    logit_shift: bool,
    generator: torch.Generator,
    positions: torch.Tensor | None = None,
    segments: torch.Tensor | None = None,
    suffix_share: float = 0.0,
) -> TrainingBatch:
    """The training batch for clean rows `ids` (B, L): complementary noisy copies, the 2L layout and the targets.

    positions, segments: (B, L) for packed rows (see collate_packed): each token's position inside its segment and
    the segment's id; segments must start at multiples of block_size and their first tokens must not be maskable.
    suffix_share: see draw_masks."""
    if ids.shape != valid.shape or ids.shape != maskable.shape:
        raise InvalidArgumentError("ids", tuple(ids.shape), "ids, valid and maskable must have one shape")
    b, length = ids.shape
    if logit_shift:
        maskable = maskable.clone()
        maskable[:, 0] = False  # nothing predicts the first token
    maskable = maskable & valid
    masked = draw_masks(maskable, block_size, generator, suffix_share=suffix_share)
    clean = ids.repeat(2, 1)
    noisy = torch.where(masked, torch.full_like(clean, mask_token_id), clean)
    valid2 = valid.repeat(2, 1)
    positions = _both_copies(positions, b, length, ids.device).repeat(2, 1)
    segments2 = None if segments is None else segments.repeat(2, 1)
    index = predictor_index(length, block_size, logit_shift, ids.device)
    rows, cols = masked.nonzero(as_tuple=True)
    return TrainingBatch(
        input_ids=torch.cat([noisy, clean], 1),
        positions=positions,
        attn_mask=training_mask(length, block_size, valid2, segments2),
        target_rows=rows,
        target_cols=index[cols],
        targets=clean[rows, cols],
        masked=masked,
    )


def gated_mask(masked: torch.Tensor, block_size: int, valid: torch.Tensor,
               segments: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, 2L, 2L) bool attention mask of the gated layout over [noisy | clean] (see the module's docstring).
    masked: (B, L) the noisy copy's mask positions, in runs (each answer); valid: (B, L) False for padding.

    Blocks are counted from the start of each run of masks, not from column 0: the drafting loop appends its masks
    right after the last token, wherever that is, so the first block of an answer holds a full block of masks that
    see the whole prompt, as the loop's first pass does."""
    if block_size < 1:
        raise InvalidArgumentError("block_size", block_size, "must be >= 1")
    b, length = masked.shape
    i = torch.arange(length, device=masked.device)
    begins = masked & ~torch.cat([torch.zeros_like(masked[:, :1]), masked[:, :-1]], 1)
    run_start = torch.cummax(torch.where(begins, i, torch.full_like(i, -1)), dim=1).values  # (B, L)
    block = torch.where(masked, run_start + (i - run_start) // block_size * block_size, -1 - i)  # a block's start
    same_block = block[:, :, None] == block[:, None, :]
    noisy_clean = i[None, None, :] < torch.where(masked, block, i + 1)[:, :, None]  # keys before the query's block
    noisy_noisy = (same_block & masked[:, None, :]) | torch.eye(length, dtype=torch.bool, device=masked.device)
    clean_clean = (i[None, :] <= i[:, None])[None].expand(b, length, length)
    clean_noisy = torch.zeros(b, length, length, dtype=torch.bool, device=masked.device)
    mask = torch.cat([torch.cat([noisy_noisy, noisy_clean], 2), torch.cat([clean_noisy, clean_clean], 2)], 1)
    return _within(mask, valid, segments)


def gated_batch(
    ids: torch.Tensor,
    valid: torch.Tensor,
    maskable: torch.Tensor,
    *,
    block_size: int,
    mask_token_id: int,
    positions: torch.Tensor | None = None,
    segments: torch.Tensor | None = None,
) -> TrainingBatch:
    """The gated layout's batch for clean rows `ids` (B, L): one noisy copy with every maskable position masked,
    the [noisy | clean] stream, `gate` open at the masks, and as targets each mask's next token (where that one is
    maskable too: a mask drafts only answer tokens)."""
    if ids.shape != valid.shape or ids.shape != maskable.shape:
        raise InvalidArgumentError("ids", tuple(ids.shape), "ids, valid and maskable must have one shape")
    b, length = ids.shape
    maskable = maskable & valid
    maskable[:, 0] = False  # a mask drafts after a token the base wrote: never at a row's first position
    noisy = torch.where(maskable, torch.full_like(ids, mask_token_id), ids)
    positions = _both_copies(positions, b, length, ids.device)
    drafts = maskable[:, :-1] & maskable[:, 1:]  # a mask at i whose next token i + 1 is an answer token
    rows, cols = drafts.nonzero(as_tuple=True)
    return TrainingBatch(
        input_ids=torch.cat([noisy, ids], 1),
        positions=positions,
        attn_mask=gated_mask(maskable, block_size, valid, segments),
        target_rows=rows,
        target_cols=cols,
        targets=ids[rows, cols + 1],
        masked=maskable,
        gate=torch.cat([maskable, torch.zeros_like(maskable)], 1),
    )
