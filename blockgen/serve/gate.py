"""One model, two users: the batcher's decode loop and the document jobs take turns at the model, one forward pass
at a time, in arrival order.

A plain lock would do for mutual exclusion, but CPython's locks are not fair: the batcher releases and re-acquires
between passes faster than a waiting document job wakes up, so the job could starve. The gate hands turns out by
ticket instead. The document writer reaches the model through `gated_model`, a view of the LoadedModel whose decoder
takes a turn for every forward pass, so a long document and chat requests advance side by side.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Self


class FairGate:
    """A mutual-exclusion lock granted in the order it was asked for (a ticket lock)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> Self:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class _GatedDecoder:
    """The decoder seen through the gate: every call (a forward pass) waits for its turn; everything else (config,
    device, dtype, the RoPE factor) is the decoder's own."""

    def __init__(self, decoder, gate: FairGate):
        self._decoder, self._gate = decoder, gate

    def __call__(self, *args, **kwargs):
        with self._gate:
            return self._decoder(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._decoder, name)


def gated_model(lm, gate: FairGate):
    """A LoadedModel sharing `lm`'s weights and tokenizer whose forward passes take turns at `gate`."""
    return dataclasses.replace(lm, model=_GatedDecoder(lm.model, gate))
