"""Rows joining a running decode at a block boundary: the room a decode offers and the layout it implies.

A joining row is laid out as it would be alone: its first generation block starts at the boundary's column, so its
prompt sits left of that column (all columns shift right when a prompt is longer than the room there) and its masked
positions run right of it (the batch widens when they reach past its last column). Columns no row uses any more (left
of every row's first valid column, and of what the cache must keep) are dropped, so a batch that rows keep joining and
leaving does not grow without bound. Shifts and drops are whole attention units, so block boundaries stay where every
row's own positions put them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def first_block(length: int, unit: int, absolute: bool) -> int:
    """The position where a prompt's first generation block starts: its length rounded down to the block unit
    (absolute alignment: the prompt's tail shares the block and is never edited), or its length."""
    return length // unit * unit if absolute else length


def _up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


@dataclass(frozen=True)
class Layout:
    """How the batch changes at a boundary: every column moves by `shift` (right when positive), the batch becomes
    `width` columns, and each joining row's first valid column is its entry in `pads` (after the shift)."""

    shift: int
    width: int
    pads: tuple[int, ...]


class JoinRoom:
    """What a running decode offers, at one block boundary, to rows waiting to join it.

    `take(prompt_length, max_new_tokens)` reserves room for one row and says whether it fits (the batch stays within
    `max_width` columns; the row's positions fit the context this decode runs with). `rows` counts the batch's rows,
    those taken included. The join callback returns the (prompt, max_new_tokens) of the rows it took, in order.
    """

    def __init__(self, *, column: int, width: int, span: int, unit: int, absolute: bool, rows: int, lowest: int,
                 frozen: int, max_width: int, fits_context: Callable[[int], bool]):
        self.column, self.width, self.span, self.unit, self.absolute = column, width, span, unit, absolute
        self.lowest = min(lowest, frozen, column)  # columns left of this may be dropped
        self.max_width, self.fits_context = max_width, fits_context
        self.rows = rows
        self.taken: list[tuple[int, int]] = []

    def take(self, prompt_length: int, max_new_tokens: int) -> bool:
        if prompt_length < 1 or max_new_tokens < 1:
            return False
        if not self.fits_context(prompt_length + max_new_tokens + self.unit):
            return False
        if self._plan(self.taken + [(prompt_length, max_new_tokens)]).width > self.max_width:
            return False
        self.taken.append((prompt_length, max_new_tokens))
        self.rows += 1
        return True

    def layout(self) -> Layout:
        return self._plan(self.taken)

    def _plan(self, taken: list[tuple[int, int]]) -> Layout:
        firsts = [first_block(length, self.unit, self.absolute) for length, _ in taken]
        # columns in front of every row, so that each prompt fits left of the boundary (pad >= 0)
        left = max([0] + [_up(f - self.column, self.unit) for f in firsts])
        right = self.width  # before the shift: the columns the batch needs
        for (length, new), f in zip(taken, firsts):
            right = max(right, self.column + _up(length - f + new, self.span))
        pads = [self.column + left - f for f in firsts]
        drop = min([self.lowest + left] + pads) // self.unit * self.unit
        return Layout(left - drop, left + right - drop, tuple(p - drop for p in pads))
