"""Context assembly for one paragraph: one plain chat request, in the form instruction-tuned models are tuned on,
carrying the document's memory within a token budget.

    You are writing a report titled "How tides work" (about 1500 words). Its sections: Introduction, Background, ...
    What the report has said so far (do not repeat it):
    - Introduction: <summary of the finished section>
    - Background, so far: <summaries of this section's earlier paragraphs>
    Characters and places so far: ...                     (stories)
    A related earlier passage: ...                        (optional retrieval)
    Write the next paragraph of the "Background" section: <goal> Focus on <beat>. Write one paragraph of about 130
    words, ...

The reply starts fresh (the model is not asked to continue a quoted text mid-sentence); an optional verbatim window
of the latest text can open the reply instead (`window` tokens), and then those paragraphs are not summarized too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blockgen.errors import InvalidArgumentError


@dataclass
class ContextBudget:
    """Token budgets of the parts; the total never exceeds `context_tokens` minus what will be generated."""

    context_tokens: int
    memory: int = 384  # summaries of earlier sections and of this section's earlier paragraphs, newest kept
    retrieved: int = 160  # earlier passages retrieved by the section's latent
    entities: int = 96
    window: int = 0  # the last tokens of the text so far, verbatim, opening the reply


@dataclass
class Brief:
    """What the next paragraph is asked to be."""

    kind: str  # "report" | "story"
    title: str
    premise: str  # the request's topic or premise
    words_total: int
    headings: list[str]
    heading: str
    goal: str
    part: int  # this paragraph's number within its section (1-based)
    parts: int  # paragraphs planned for the section
    words: int  # words asked for this paragraph
    focus: str = ""  # a beat or angle for this paragraph


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


def _fit_lines(lm, lines: list[str], budget: int) -> tuple[list[str], int]:
    """The newest lines that fit in `budget` tokens (memory drops its oldest lines first)."""
    kept, used = [], 0
    for line in reversed(lines):
        n = len(lm.encode_text(line)) + 1
        if used + n > budget:
            break
        kept.append(line)
        used += n
    return kept[::-1], used


def instruction(brief: Brief, has_memory: bool) -> str:
    # the section of what whole (the title): goals need not name the topic, so the outline latent's nodes differ by
    # what each section is for rather than all standing near the topic
    of = f' of the {brief.kind} "{brief.title}"'
    which = (f'the next paragraph of the "{brief.heading}" section{of}' if brief.part > 1
             else f'the "{brief.heading}" section{of}')
    goal = f" {brief.goal.strip()}" if brief.goal.strip() else ""
    if goal and not goal.endswith((".", "!", "?")):
        goal += "."
    focus = f" Focus on {brief.focus.strip().rstrip('.')}." if brief.focus.strip() else ""
    fresh = ", and say something not said before" if has_memory else ""
    return f"Write {which}:{goal}{focus} Write one paragraph of about {brief.words} words, with no heading{fresh}."


def request_head(brief) -> str:
    """The context's first lines: what is being written (a model that echoes them writes them back; the writer's
    cleanup drops such sentences as repeats)."""
    about = f" (about {brief.words_total} words)" if brief.words_total else ""
    head = f'You are writing a {brief.kind} titled "{brief.title}"{about}.'
    if brief.kind == "report" and len(brief.headings) > 1:  # (a story's parts, listed, get echoed as a list)
        head += f" Its sections: {', '.join(brief.headings)}."
    if brief.kind == "story" and brief.premise.strip().lower() != brief.title.strip().lower():
        head += f" The story: {brief.premise.strip().rstrip('.')}."
    return head


def assemble(
    lm,
    brief: Brief,
    *,
    memory: list[str],
    retrieved: list[str],
    entities: str,
    window_text: str,
    budget: ContextBudget,
    reserve: int,
) -> AssembledContext:
    """Token ids of the chat prompt for the next paragraph, and a log of the parts.

    memory: lines such as "Introduction: <summary>", oldest first. `reserve` tokens are kept free for the paragraph
    itself. Parts shrink in this order when the whole does not fit: retrieved passages, entities, the oldest memory
    lines, the front of the window."""
    limit = budget.context_tokens - reserve
    if limit <= 0:
        raise InvalidArgumentError("context_tokens", budget.context_tokens, f"leaves no room for a context after "
                                   f"reserving {reserve} tokens for the paragraph")
    lines, _ = _fit_lines(lm, memory, budget.memory)
    parts = {
        "retrieved": _fit(lm, "\n".join(retrieved), budget.retrieved),
        "entities": _fit(lm, entities, budget.entities),
        "window": _fit(lm, window_text, budget.window, keep_end=True),
    }

    def render() -> list[int]:
        blocks = [request_head(brief)]
        if lines:
            blocks.append(f"What the {brief.kind} has said so far (do not repeat it):\n"
                          + "\n".join(f"- {line}" for line in lines))
        if parts["entities"][0]:
            blocks.append(f"Characters and places so far: {parts['entities'][0]}")
        if parts["retrieved"][0]:
            blocks.append(f"A related earlier passage: {parts['retrieved'][0]}")
        blocks.append(instruction(brief, bool(lines)))
        ids = lm.encode("\n\n".join(blocks), chat=lm.has_chat_template)
        if parts["window"][0]:  # the reply opens with the latest text, so the model continues it
            ids = ids + lm.encode_text(parts["window"][0].strip() + "\n\n")
        return ids

    ids = render()
    for name in ("retrieved", "entities", "memory", "window"):
        while len(ids) > limit and (len(lines) if name == "memory" else parts[name][1]) > 0:
            if name == "memory":
                lines = lines[1:]
            else:
                excess = len(ids) - limit
                text, n = parts[name]
                parts[name] = _fit(lm, text, max(0, n - excess - 4), keep_end=name == "window")
            ids = render()
    if len(ids) > limit:
        raise InvalidArgumentError("context_tokens", budget.context_tokens, f"the request alone takes {len(ids)} "
                                   f"tokens; the limit is {limit}")
    log = {name: n for name, (_, n) in parts.items()}
    log.update(memory=len(lm.encode_text("\n".join(lines))) if lines else 0, memory_lines=len(lines),
               prompt_tokens=len(ids), limit=limit, section=brief.heading, part=brief.part)
    return AssembledContext(ids, log)
