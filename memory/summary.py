"""Summary tokens: a compact, token-budgeted stand-in for a written paragraph in later contexts.

Extractive: the paragraph's sentences are scored by position (later sentences weigh more: they carry where the text
is going) and by centrality (similarity to the paragraph's mean embedding), picked best-first until the token budget is
full, and kept in their original order. Abstractive: the model itself is asked for a summary within the budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blockgen.errors import InvalidArgumentError
from blockgen.loading.embedder import embed

_SENTENCE_END = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text; a line break also ends one (headings, list items and markers stand alone)."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line.strip()) if s.strip()]


def position_weights(n: int, recency: float = 1.0) -> list[float]:
    """Weights rising from the first sentence to the last: (i + 1) / n raised to `recency` (0 = flat)."""
    return [((i + 1) / n) ** recency for i in range(n)]


@dataclass
class Summary:
    text: str
    token_ids: list[int]
    sentences: list[int]  # indices of the paragraph's sentences it kept


def extractive_summary(text: str, lm, budget: int = 48, *, recency: float = 1.0, embedder=None) -> Summary:
    """Summary of at most `budget` tokens (of the model `lm`, a blockgen LoadedModel) built from whole sentences of
    `text` where possible."""
    if not isinstance(budget, int) or budget < 1:
        raise InvalidArgumentError("budget", budget, "must be a positive number of tokens")
    sentences = split_sentences(text)
    if not sentences:
        return Summary("", [], [])
    weights = position_weights(len(sentences), recency)
    if len(sentences) > 1:
        vectors = embed(sentences, embedder)
        centre = vectors.mean(0)
        centrality = ((vectors @ centre) / centre.norm().clamp_min(1e-8)).clamp_min(0).tolist()
    else:
        centrality = [1.0]
    scores = [w * (0.5 + c) for w, c in zip(weights, centrality)]
    lengths = [len(lm.encode_text(" " + s)) for s in sentences]
    chosen, used = [], 0
    for i in sorted(range(len(sentences)), key=lambda i: (-scores[i], -i)):
        if used + lengths[i] <= budget:
            chosen.append(i)
            used += lengths[i]
    if not chosen:  # even the best sentence is too long: keep its end (where the paragraph was heading)
        best = max(range(len(sentences)), key=lambda i: scores[i])
        ids = lm.encode_text(" " + sentences[best])[-budget:]
        return Summary(lm.decode(ids, skip_special_tokens=False).strip(), ids, [best])
    chosen.sort()
    summary = " ".join(sentences[i] for i in chosen)
    ids = lm.encode_text(summary)[:budget]
    return Summary(summary, ids, chosen)


def abstractive_summary(lm, text: str, budget: int = 48, **options) -> Summary:
    """Ask the model (a blockgen LoadedModel) for a summary of at most `budget` tokens."""
    if not isinstance(budget, int) or budget < 1:
        raise InvalidArgumentError("budget", budget, "must be a positive number of tokens")
    prompt = f"Summarize the following passage in one or two sentences.\n\n{text}"
    result = lm.generate_results(prompt, chat=lm.has_chat_template, max_new_tokens=budget, **options)[0]
    return Summary(result.text.strip(), result.tokens, [])
