"""The batcher: requests that arrive together are decoded together, in one engine batch.

Every choice of every request is a `Row` (token-id prompt, its own options, a callback for its updates). One
thread takes waiting rows in arrival order and decodes as many as share the decode-relevant options as
one batch with `blockgen.engine.decode` (rows of different lengths are left-padded to a common block column; each
row finishes alone and leaves the batch). A row's own length limit and stop strings are applied through the loop's
`stop_check`, so rows with different `max_tokens` or `stop` share a batch; so is a cancelled row (its client went
away), which then retires at the next pass and frees its place.

Rows that arrive while a batch runs join it at its next block boundary (the engine's `join`: the row is laid out as
it would be alone, its prompt's keys and values computed and added to the batch's cache), in arrival order, as long
as they share the batch's key and there is room (`max_batch` rows; the batch's columns within the context); a row
with another key stops later arrivals from joining ahead of it, so the batch drains and that row leads the next one.
Before a batch starts, arrivals are gathered briefly: right after a batch, until its rows are back (clients that send
their next request as soon as an answer ends) on top of those that were already waiting, for at most a few of its
decoding steps; after a quiet spell, for a short window that lets a burst of arrivals start together.

Greedy rows give what each would give alone: the batch's maximum length only matters for block-diffusion layouts
(the last block of a shorter row would differ) and bidirectional models (a row sees its masked tail), so there the
length is part of the batch key; seeded sampling (temperature > 0 with a seed) runs as its own batch so that a seed
reproduces its answer.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from blockgen.engine import FinishEvent, GenerationConfig, StepEvent, decode, resolve_cache
from blockgen.engine.decode import attention_block
from blockgen.engine.generation import RowText
from blockgen.errors import BlockgenError, InvalidArgumentError
from blockgen.models.attention import AttentionKind

log = logging.getLogger("blockgen.serve")


class ContextError(InvalidArgumentError):
    """A prompt and its max_tokens that do not fit the model's context."""


class ServerStopping(BlockgenError):
    """The server stopped before a row finished."""


@dataclass
class Update:
    """What a row's client hears: new text, the row's tokens so far, and the finish reason on the last update (or
    the error that ended its batch)."""

    text: str
    tokens: int
    finish_reason: str | None = None
    error: Exception | None = None


@dataclass(eq=False)
class Row:
    """One sequence to decode: a prompt's choice. `emit` is called from the batcher's thread."""

    prompt: list[int]
    config: GenerationConfig
    emit: Callable[[Update], None]
    key: tuple
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # set when the batcher's stop_check ends the row ("stop" / "length")
    arrived: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0
    cancelled: int = 0
    joined: int = 0  # rows that joined a running batch

    def as_dict(self) -> dict:
        return {"batches": self.batches, "rows": self.rows, "largest_batch": self.largest,
                "cancelled_rows": self.cancelled, "joined_rows": self.joined}


class Batcher:
    """Decodes waiting rows in batches, on one thread; `gate` is held for each pass of the decode loop."""

    BURST_SECONDS = 0.05  # after a quiet spell, arrivals within this window start together
    QUIET_SECONDS = 1.0  # no batch for this long: the next arrivals are a new burst
    MAX_WAIT_SECONDS = 0.25  # right after a batch, wait at most this long for its clients to come back

    def __init__(self, lm, gate, *, max_batch: int = 32):
        if max_batch < 1:
            raise InvalidArgumentError("max_batch", max_batch, "must be at least 1")
        self.lm, self.gate = lm, gate
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._pending: deque[Row] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._expected, self._last_end, self._last_step = 1, 0.0, 0.0  # rows expected after the last batch
        self._solo = itertools.count()
        self._current: list[Row] = []  # the running batch's rows (the list _decode indexes; joined rows are appended)
        self._thread: threading.Thread | None = None

    # ---- the request side
    def check(self, config: GenerationConfig, prompt_tokens: int, prompt_field: str = "prompt") -> None:
        """Raise InvalidArgumentError for options this model cannot decode with, before any row is queued (errors
        inside a running batch would reach its other rows too)."""
        family = self.lm.family
        block = config.block_for(family)
        if family.mask_token_id is None and not (block == 1 and family.logit_shift):
            raise InvalidArgumentError("block_size", block, f"this {family.model_type} checkpoint has no mask token, "
                                       "so it decodes one token at a time (block_size=1)")
        resolve_cache(config.cache, family)
        attention_block(family, block)
        config.make_scheduler()
        limit = self.lm.context_limit
        if prompt_tokens + config.max_new_tokens + block > limit:
            raise ContextError(prompt_field, f"{prompt_tokens} tokens", f"the prompt and max_tokens="
                               f"{config.max_new_tokens} (with {block} of block padding) exceed the model's context of "
                               f"{limit} tokens")

    def key_for(self, config: GenerationConfig) -> tuple:
        """Rows with equal keys may share a batch (see the module's docstring)."""
        options = config.model_dump(exclude={"max_new_tokens", "stop", "seed"})
        family = self.lm.family
        if config.block_for(family) > 1 or family.attention is AttentionKind.BIDIRECTIONAL:
            options["max_new_tokens"] = config.max_new_tokens  # a row's length shapes its layout
        if config.temperature > 0 and config.seed is not None:
            options["seed"] = (config.seed, next(self._solo))  # a batch of its own: the seed reproduces the answer
        return tuple(sorted((k, repr(v)) for k, v in options.items()))

    def submit(self, rows: list[Row]) -> None:
        with self._cond:
            if self._stopping:
                raise ServerStopping("the server is shutting down")
            self._pending.extend(rows)
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---- lifecycle
    def start(self) -> None:
        """Decode on a thread of its own."""
        self._thread = threading.Thread(target=self.serve_forever, name="blockgen-batcher", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Decode batches in the calling thread until stop().

        PyTorch's OpenMP runtime keeps a team of worker threads for every thread that has run a parallel region;
        once there are more of them than cores, every team stops spinning between regions and each small operation
        pays a wake-up (decoding one row a step slows down by half). So the thread that loaded the model is the best
        one to decode with: `blockgen.serve.run` decodes in it and serves HTTP from another.
        """
        self._run()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking rows; the rows waiting and running end with ServerStopping; wait for the thread."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            unfinished = list(self._pending) + list(self._current)
            self._pending.clear()
            self._cond.notify_all()
        for row in unfinished:
            if not row.cancelled.is_set():
                row.cancel()
                row.emit(Update("", 0, None, error=ServerStopping("the server is shutting down")))
        if self._thread is not None and self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the batcher's thread
    def _take(self) -> list[Row]:
        """The next batch: the oldest waiting row and the rows after it with the same key that fit with it."""
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            # gather (see the module's docstring)
            if self._pending[0].arrived - self._last_end < self.QUIET_SECONDS:
                target = min(self.max_batch, self._expected)
                deadline = self._last_end + min(self.MAX_WAIT_SECONDS, 3 * self._last_step)
            else:
                target = self.max_batch
                deadline = self._pending[0].arrived + self.BURST_SECONDS
            while len(self._pending) < target and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            live = [row for row in self._pending if not row.cancelled.is_set()]
            self.stats.cancelled += len(self._pending) - len(live)
            if not live:
                self._pending.clear()
                return []
            key = live[0].key
            block = live[0].config.block_for(self.lm.family)
            chosen, longest, most = [], 0, 0
            for row in live:
                if row.key != key or len(chosen) >= self.max_batch:
                    continue
                new_longest, new_most = max(longest, len(row.prompt)), max(most, row.config.max_new_tokens)
                if chosen and new_longest + new_most + block > self.lm.context_limit:
                    continue  # fits alone (checked on arrival), not with these: it leads a later batch
                chosen.append(row)
                longest, most = new_longest, new_most
            taken = set(map(id, chosen))
            self._pending = deque(row for row in live if id(row) not in taken)
            self._current = chosen
            return chosen

    def _run(self) -> None:
        while True:
            rows = self._take()
            if not rows:
                if self._stopping:
                    return
                continue
            start, passes = time.monotonic(), 0
            try:
                passes = self._decode(rows)
            except Exception as exc:  # an engine error ends this batch's rows, not the server
                log.exception("a batch of %d rows failed", len(rows))
                for row in rows:
                    if not row.cancelled.is_set():
                        row.emit(Update("", 0, None, error=exc))
            # not in a `finally`: a KeyboardInterrupt leaves the batch in _current, for stop() to end its rows
            with self._cond:
                self._current = []
                self._expected, self._last_end = len(rows) + len(self._pending), time.monotonic()
            self._last_step = (self._last_end - start) / max(passes, 1)

    def _decode(self, rows: list[Row]) -> int:
        """Decode one batch, sending each row's updates; returns the number of passes it took."""
        lm = self.lm
        self.stats.batches += 1
        self.stats.rows += len(rows)
        self.stats.largest = max(self.stats.largest, len(rows))
        lead = rows[0].config
        config = GenerationConfig.build(**(lead.model_dump() | {
            "max_new_tokens": max(r.config.max_new_tokens for r in rows), "stop": ()}))
        texts = [RowText(lm.tokenizer, row.config.stop) for row in rows]

        def stop_check(i: int, tokens: list[int]) -> int | None:
            row = rows[i]
            if row.cancelled.is_set():
                return len(tokens)
            cut = texts[i].stop_at(tokens)
            if cut is not None:
                row.reason = "stop"
                return cut
            if len(tokens) >= row.config.max_new_tokens:
                row.reason = "length"
                return row.config.max_new_tokens
            return None

        def join(room) -> list[tuple[list[int], int]]:
            """Waiting rows with this batch's key, in arrival order, up to the first with another key."""
            with self._cond:
                if self._stopping:
                    return []
                taken, waiting = [], deque()
                for row in self._pending:
                    if row.cancelled.is_set():
                        self.stats.cancelled += 1
                        continue
                    if (not waiting and row.key == rows[0].key and room.rows < self.max_batch
                            and room.take(len(row.prompt), row.config.max_new_tokens)):
                        taken.append(row)
                    else:
                        waiting.append(row)
                self._pending = waiting
                rows.extend(taken)  # rows is self._current: stop() sees them too
                texts.extend(RowText(lm.tokenizer, row.config.stop) for row in taken)
            self.stats.rows += len(taken)
            self.stats.joined += len(taken)
            self.stats.largest = max(self.stats.largest, room.rows)
            return [(row.prompt, row.config.max_new_tokens) for row in taken]

        settings = config.decode_settings(lm.family, lm.device, lm.stop_token_ids, lm.tokenizer)
        events = decode(lm.model, lm.family, config.make_scheduler(), [row.prompt for row in rows], settings,
                        stop_check, join=None if lm.family.gated else join)  # a drafting loop takes no joins
        passes = 0
        while True:
            with self.gate:
                event = next(events, None)
            if event is None:
                return passes
            if isinstance(event, StepEvent):
                passes += 1
                for i, tokens in event.stable.items():
                    if rows[i].cancelled.is_set():
                        continue
                    text, _ = texts[i].advance(tokens, final=False)
                    if text:
                        rows[i].emit(Update(text, len(tokens)))
            elif isinstance(event, FinishEvent):
                row = rows[event.row]
                if row.cancelled.is_set():
                    self.stats.cancelled += 1
                    continue
                text, _ = texts[event.row].advance(event.tokens, final=True)
                row.emit(Update(text, len(event.tokens), row.reason or event.reason))
