"""The text tiers over the decode loop: a stream of text deltas with stats, and a blocking generate.

`GenerationConfig` (engine/options.py) validates every option at the boundary; `stream` turns decode events into
per-row text deltas (each committed token reaches the stream exactly once, in order); `collect` gathers them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from blockgen.engine.decode import FinishEvent, StepEvent, decode
from blockgen.engine.options import GenerationConfig

@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_passes: int = 0
    forward_tokens: int = 0  # tokens run through the model, per row, summed over passes
    seconds: float = 0.0

    @property
    def tokens_per_forward(self) -> float:
        return self.generated_tokens / self.forward_passes if self.forward_passes else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


@dataclass
class GenerationChunk:
    """A piece of one row's output: new text and tokens (possibly empty), and its finish reason on the last chunk."""

    row: int
    text: str
    tokens: list[int]
    finish_reason: str | None
    stats: GenerationStats


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    finish_reason: str
    stats: GenerationStats = field(default_factory=GenerationStats)


class IncrementalText:
    """The text of an append-only token list (a row's stable tokens), decoded as it grows: each new token is decoded
    with a few tokens of left context and its text appended, so a step costs what its new tokens cost, not what the
    whole row does. `ends[i]` is the text's length after token i. A list that is not an extension of the last one is
    decoded afresh."""

    CONTEXT = 6  # tokens of left context: byte-level pieces of one character, and merges across the boundary

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self.ends: list[int] = []

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def update(self, tokens: list[int]) -> str:
        known = len(self.tokens)
        if len(tokens) < known or tokens[:known] != self.tokens:
            self.tokens, self.text, self.ends, known = [], "", [], 0
        for i in range(known, len(tokens)):
            lo = max(0, i - self.CONTEXT)
            before = self._decode(tokens[lo:i])
            after = self._decode(tokens[lo : i + 1])
            # an unfinished character at the end (U+FFFD in the text so far) may be completed by this token; the
            # context's own start may hold orphaned pieces of an earlier character (U+FFFD too, but not the text's)
            partial = min(len(before) - len(before.rstrip("\ufffd")), len(self.text) - len(self.text.rstrip("\ufffd")))
            head = before[: len(before) - partial]
            if after.startswith(head):
                self.text = self.text[: len(self.text) - partial] + after[len(head):]
            else:  # the context changed how earlier tokens read: decode the whole prefix
                self.text = self._decode(tokens[: i + 1])
            self.ends.append(len(self.text))
        self.tokens = list(tokens)
        return self.text

    def length_of(self, n: int) -> int:
        """The text's length after the first n tokens."""
        return self.ends[n - 1] if n > 0 else 0

    def stop_cut(self, stops: tuple[str, ...], searched: int = 0) -> tuple[int | None, int]:
        """(how many tokens come before the first stop string, or None; how far the text has been searched). Only
        text past `searched` (less a stop string's length) is searched again."""
        if not stops:
            return None, len(self.text)
        start = max(0, searched - max(map(len, stops)) + 1)
        hits = [i for i in (self.text.find(stop, start) for stop in stops) if i >= 0]
        if not hits:
            return None, len(self.text)
        n = len(self.tokens)
        while n > 0 and self.length_of(n) > min(hits):
            n -= 1
        return n, len(self.text)


def safe_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the prefix of streamed text that can be shown now: never half a UTF-8 character (decoded as
    U+FFFD), never a tail that could still grow into a stop string."""
    end = len(text.rstrip("\ufffd"))
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[end - k : end] == stop[:k]:
                end -= k
                break
    return end


class RowText:
    """Incremental decoding of one row (for `stream` and the server's batcher). Text is emitted once final: never a
    partial UTF-8 character, never the beginning of what may turn out to be a stop string; tokens are emitted with
    the text they spell."""

    def __init__(self, tokenizer, stops: tuple[str, ...]):
        self.stops = stops
        self.decoded = IncrementalText(tokenizer)
        self.searched = 0
        self.emitted_text, self.emitted_tokens = "", 0

    def stop_at(self, tokens: list[int]) -> int | None:
        """The number of tokens before the first stop string, or None when the text holds none."""
        self.decoded.update(tokens)
        cut, self.searched = self.decoded.stop_cut(self.stops, self.searched)
        return cut

    def advance(self, tokens: list[int], final: bool) -> tuple[str, list[int]]:
        """The text and tokens not emitted yet that may be emitted now (all of it, up to a stop string, when final)."""
        text = self.decoded.update(tokens)
        if final:
            for stop in self.stops:
                text = text.split(stop, 1)[0]
            show, n = len(text), len(tokens)
        else:
            show, n = safe_length(text, self.stops), len(tokens)
            if show < len(text):  # emit only the tokens whose text is shown
                while n > self.emitted_tokens and self.decoded.length_of(n) > show:
                    n -= 1
                show = self.decoded.length_of(n)
        delta = text[len(self.emitted_text) : show]
        new = tokens[self.emitted_tokens : n]
        self.emitted_text, self.emitted_tokens = text[:show], max(n, self.emitted_tokens)
        return delta, new


def stream(
    model,
    family,
    tokenizer,
    prompts: list[list[int]],
    config: GenerationConfig,
    *,
    stop_token_ids: tuple[int, ...] = (),
    scheduler=None,
) -> Iterator[GenerationChunk]:
    """Chunks of text per row, in commit order of each row's contiguous prefix; every row ends with a chunk whose
    finish_reason is "stop" (EOS or a stop string) or "length" (max_new_tokens)."""
    scheduler = scheduler if scheduler is not None else config.make_scheduler()
    settings = config.decode_settings(family, model.device, stop_token_ids, tokenizer)
    rows = [RowText(tokenizer, config.stop) for _ in prompts]
    stop_check = (lambda row, tokens: rows[row].stop_at(tokens)) if config.stop else None
    stats = [GenerationStats(prompt_tokens=len(p)) for p in prompts]
    start = time.perf_counter()
    live = set(range(len(prompts)))
    for event in decode(model, family, scheduler, prompts, settings, stop_check):
        now = time.perf_counter() - start
        if isinstance(event, StepEvent):
            for row in live if event.rows is None else event.rows:
                stats[row].forward_passes += 1
                stats[row].forward_tokens += event.forward_tokens
                stats[row].seconds = now
            for row, tokens in event.stable.items():
                text, new = rows[row].advance(tokens, final=False)
                stats[row].generated_tokens = len(tokens)
                if new:
                    yield GenerationChunk(row, text, new, None, stats[row])
        elif isinstance(event, FinishEvent):
            live.discard(event.row)
            text, new = rows[event.row].advance(event.tokens, final=True)
            stats[event.row].generated_tokens, stats[event.row].seconds = len(event.tokens), now
            yield GenerationChunk(event.row, text, new, event.reason, stats[event.row])


def collect(chunks: Iterator[GenerationChunk], n: int) -> list[GenerationResult]:
    """Blocking: gather a stream of n rows into one GenerationResult per row."""
    texts: list[list[str]] = [[] for _ in range(n)]
    tokens: list[list[int]] = [[] for _ in range(n)]
    results: list[GenerationResult | None] = [None] * n
    for chunk in chunks:
        texts[chunk.row].append(chunk.text)
        tokens[chunk.row].extend(chunk.tokens)
        if chunk.finish_reason is not None:
            results[chunk.row] = GenerationResult(
                "".join(texts[chunk.row]), tokens[chunk.row], chunk.finish_reason, chunk.stats
            )
    return results
