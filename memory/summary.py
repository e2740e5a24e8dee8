"""Summary tokens: a compact, token-budgeted stand-in for a finished block in later contexts.

Extractive: the block's sentences are scored by position (later sentences weigh more: they carry where the text is
going) and by centrality (similarity to the block's mean embedding), picked best-first until the token budget is
full, and kept in their original order. Abstractive: the model itself is asked for a summary within the budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blockgen.errors import InvalidArgumentError

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
    sentences: list[int]  # indices of the block's sentences it kept


def extractive_summary(text: str, tokenizer, budget: int = 48, *, recency: float = 1.0, embedder=None) -> Summary:
    """Summary of at most `budget` tokens (of `tokenizer`) built from whole sentences of `text` where possible."""
    if not isinstance(budget, int) or budget < 1:
        raise InvalidArgumentError("budget", budget, "must be a positive number of tokens")
    sentences = split_sentences(text)
    if not sentences:
        return Summary("", [], [])
    weights = position_weights(len(sentences), recency)
    if len(sentences) > 1:
        from blockgen.planners.latent import embed

        vectors = embed(sentences, embedder)
        centre = vectors.mean(0)
        centrality = ((vectors @ centre) / centre.norm().clamp_min(1e-8)).clamp_min(0).tolist()
    else:
        centrality = [1.0]
    scores = [w * (0.5 + c) for w, c in zip(weights, centrality)]
    lengths = [len(tokenizer(" " + s, add_special_tokens=False)["input_ids"]) for s in sentences]
    chosen, used = [], 0
    for i in sorted(range(len(sentences)), key=lambda i: (-scores[i], -i)):
        if used + lengths[i] <= budget:
            chosen.append(i)
            used += lengths[i]
    if not chosen:  # even the best sentence is too long: keep its end (where the block was heading)
        best = max(range(len(sentences)), key=lambda i: scores[i])
        ids = tokenizer(" " + sentences[best], add_special_tokens=False)["input_ids"][-budget:]
        return Summary(tokenizer.decode(ids).strip(), ids, [best])
    chosen.sort()
    summary = " ".join(sentences[i] for i in chosen)
    ids = tokenizer(summary, add_special_tokens=False)["input_ids"][:budget]
    return Summary(summary, ids, chosen)


def abstractive_summary(lm, text: str, budget: int = 48, **options) -> Summary:
    """Ask the model (a blockgen LoadedModel) for a summary of at most `budget` tokens."""
    if not isinstance(budget, int) or budget < 1:
        raise InvalidArgumentError("budget", budget, "must be a positive number of tokens")
    prompt = f"Summarize the following passage in one or two sentences.\n\n{text}"
    chat = bool(getattr(lm.tokenizer, "chat_template", None))
    result = lm.generate_results(prompt, chat=chat, max_new_tokens=budget, **options)[0]
    return Summary(result.text.strip(), result.tokens, [])
