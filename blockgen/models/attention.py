"""Attention kinds and the boolean masks they induce, built from absolute positions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from blockgen.errors import InvalidArgumentError


class AttentionKind(str, Enum):
    CAUSAL = "causal"
    BLOCK_CAUSAL = "block_causal"
    BIDIRECTIONAL = "bidirectional"


@dataclass(frozen=True)
class Attention:
    """How queries see keys. Block-causal: a query sees every key whose block (position // block_size) is not later."""

    kind: AttentionKind = AttentionKind.CAUSAL
    block_size: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "kind", AttentionKind(self.kind))
        if self.kind is AttentionKind.BLOCK_CAUSAL:
            if not isinstance(self.block_size, int) or self.block_size < 1:
                raise InvalidArgumentError("block_size", self.block_size, "block-causal attention needs an int >= 1")
        elif self.block_size is not None:
            raise InvalidArgumentError("block_size", self.block_size, "only block-causal attention takes a block size")

    @classmethod
    def causal(cls) -> "Attention":
        return cls(AttentionKind.CAUSAL)

    @classmethod
    def block_causal(cls, block_size: int) -> "Attention":
        return cls(AttentionKind.BLOCK_CAUSAL, block_size)

    @classmethod
    def bidirectional(cls) -> "Attention":
        return cls(AttentionKind.BIDIRECTIONAL)


CAUSAL = "causal"  # the mask argument meaning "causal from the first key" (SDPA's is_causal, no mask tensor)
DENSE = "dense"  # what structural_mask answers when only a mask tensor (build_mask) describes the pass


def structural_mask(attention: Attention, start: int, length: int) -> str | None:
    """The mask a pass needs when its `length` new tokens sit at positions start, start + 1, ... after `start` cached
    keys at positions 0 .. start - 1, none of them padding: None when every query sees every key (one new token under
    causal attention, new tokens within one block under block-causal, bidirectional), CAUSAL for causal attention
    without cached keys, DENSE otherwise (build it with `build_mask`). What SDPA is given decides its kernel: with no
    mask tensor it can run flash attention."""
    if attention.kind is AttentionKind.BIDIRECTIONAL or length == 1 and attention.kind is AttentionKind.CAUSAL:
        return None
    if attention.kind is AttentionKind.CAUSAL:
        return CAUSAL if start == 0 else DENSE
    size = attention.block_size
    return None if start // size == (start + length - 1) // size else DENSE


def build_mask(
    attention: Attention,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_valid: torch.Tensor | None,
    query_valid: torch.Tensor | None,
) -> torch.Tensor | None:
    """(B, 1, Tq, Tk) bool mask (True = may attend), or None when every query sees every key.

    Queries that are padding see every key, so no softmax row is empty (their outputs are never read).
    """
    q = query_positions[:, :, None]  # (B, Tq, 1)
    k = key_positions[:, None, :]  # (B, 1, Tk)
    if attention.kind is AttentionKind.CAUSAL:
        mask = k <= q
    elif attention.kind is AttentionKind.BLOCK_CAUSAL:
        mask = torch.div(k, attention.block_size, rounding_mode="floor") <= torch.div(
            q, attention.block_size, rounding_mode="floor"
        )
    elif key_valid is None:
        return None
    else:
        mask = torch.ones(q.shape[0], q.shape[1], k.shape[2], dtype=torch.bool, device=q.device)
    if key_valid is not None:
        mask = mask & key_valid[:, None, :]
    if query_valid is not None:
        mask = mask | ~query_valid[:, :, None]
    return mask[:, None]
