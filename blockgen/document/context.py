"""Context assembly for one paragraph: instructions + outline (current section marked) + summary tokens of earlier
paragraphs + retrieved passages + entities + an overlapping window of the latest text, within a token budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from blockgen.errors import InvalidArgumentError


@dataclass
class ContextBudget:
    """Token budgets of the parts; the total never exceeds `max_context` minus what will be generated."""

    max_context: int
    window: int = 256  # the last tokens of the text so far, verbatim
    summaries: int = 384  # summary tokens of earlier paragraphs, newest first
    retrieved: int = 192  # earlier passages retrieved by the section's latent
    entities: int = 96


@dataclass
class AssembledContext:
    prompt_ids: list[int]
    log: dict = field(default_factory=dict)  # what went in, in tokens, for debugging


def _fit(lm, text: str, budget: int, *, keep_end: bool = False) -> tuple[str, int]:
    """Text cut to at most `budget` tokens (from the front when keep_end: a window keeps the latest words)."""
    if budget <= 0 or not text:
        return "", 0
    ids = lm.encode_text(text)
    if len(ids) <= budget:
        return text, len(ids)
    ids = ids[-budget:] if keep_end else ids[:budget]
    return lm.decode(ids), len(ids)


def assemble(
    lm,
    *,
    kind: str,
    outline_text: str,
    heading: str,
    instruction: str,
    summaries: list[str],
    retrieved: list[str],
    entities: str,
    window_text: str,
    budget: ContextBudget,
    reserve: int,
) -> AssembledContext:
    """Token ids of the chat prompt for the next paragraph, and a log of the parts.

    The instructions, outline, summaries, retrieved passages and entities form the request; the overlapping window
    is not quoted in it but opens the reply, so the model continues the text itself (small models asked to continue
    a quoted text tend to echo the quote's label instead).

    `reserve` tokens are kept free for the paragraph itself. Parts shrink in this order when the whole does not fit:
    retrieved passages, entities, the oldest summaries, the front of the window.
    """
    limit = budget.max_context - reserve
    if limit <= 0:
        raise InvalidArgumentError("max_context", budget.max_context, f"leaves no room for a context after reserving "
                                   f"{reserve} tokens for the paragraph")
    summary_text = " ".join(summaries)
    parts = {
        "summaries": _fit(lm, summary_text, budget.summaries, keep_end=True),
        "retrieved": _fit(lm, "\n".join(retrieved), budget.retrieved),
        "entities": _fit(lm, entities, budget.entities),
        "window": _fit(lm, window_text, budget.window, keep_end=True),
    }

    def render() -> list[int]:
        sections = [f"You are writing a {kind}. Outline (the section being written is marked >>):\n{outline_text}"]
        if parts["summaries"][0]:
            sections.append(f"Summary of what was written so far:\n{parts['summaries'][0]}")
        if parts["retrieved"][0]:
            sections.append(f"Related earlier passages:\n{parts['retrieved'][0]}")
        if parts["entities"][0]:
            sections.append(f"Names and facts introduced so far:\n{parts['entities'][0]}")
        sections.append(instruction)
        ids = lm.encode("\n\n".join(sections), chat=lm.has_chat_template)
        if parts["window"][0]:  # the reply opens with the latest text, so the model continues it in a new paragraph
            opening = parts["window"][0].strip() + "\n\n"
            ids = ids + lm.encode_text(opening)
        return ids

    ids = render()
    for name in ("retrieved", "entities", "summaries", "window"):
        while len(ids) > limit and parts[name][1] > 0:
            excess = len(ids) - limit
            text, n = parts[name]
            parts[name] = _fit(lm, text, max(0, n - excess - 4), keep_end=name in ("summaries", "window"))
            ids = render()
    if len(ids) > limit:
        raise InvalidArgumentError("max_context", budget.max_context, f"the outline and instructions alone take "
                                   f"{len(ids)} tokens; the limit is {limit}")
    log = {name: n for name, (_, n) in parts.items()}
    log.update(prompt_tokens=len(ids), limit=limit, section=heading)
    return AssembledContext(ids, log)
