"""Template planners: a fixed, kind-specific section plan filled with the request's topic, with exact budgets.

They give every request a valid outline without a model, and they are what a model-drafted outline falls back on,
part by part and on the record, where the model's text fails validation.
"""

from __future__ import annotations

from blockgen.errors import InvalidArgumentError
from blockgen.planners.budget import allocate_words
from blockgen.planners.outline import Outline

# Goals that differ in what they ask for (what it is, its history, how it works, its effects, what to remember), so
# each section has its own content and the outline latent tells the sections apart. No goal names the topic (the
# title does): a node that did would stand nearest every section, and a question as topic would not read as a phrase
# ("What how tides work is").
_REPORT = [
    ("Introduction", "The basics: a simple definition, the key terms, and a familiar example from daily life.", 1.0),
    ("Background", "The history: who first studied it, in which century, and the early ideas.", 1.4),
    ("Main findings", "How it works: the causes and mechanisms, explained step by step.", 1.8),
    ("Analysis", "The effects on people, nature and the economy, and the open questions.", 1.4),
    ("Conclusion", "Looking ahead: future research, new uses, and the lesson to remember.", 0.8),
]
_STORY = [  # no goal names the story's topic (the title does): a node that did would stand nearest every scene
    ("Opening", "An ordinary day: introduce the place, the hero and the hero's daily life.", 1.0),
    ("Rising action", "Trouble begins: a problem appears, grows and worries everyone.", 1.5),
    ("Turning point", "A discovery or a hard decision changes everything.", 1.2),
    ("Climax", "The danger is at its worst; the hero acts, with everything at stake.", 1.2),
    ("Resolution", "The ending: peace at last, the hero at home again, and how life is different now.", 0.8),
]


def template_outline(topic: str, words: int, kind: str = "report", title: str | None = None) -> Outline:
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidArgumentError("topic", topic, "is empty")
    if kind not in ("report", "story"):
        raise InvalidArgumentError("kind", kind, "must be 'report' or 'story'")
    plan = _REPORT if kind == "report" else _STORY
    if words < 400:  # short pieces get fewer sections
        plan = [plan[0], plan[2], plan[-1]] if words >= 150 else [plan[0]]
    budgets = allocate_words(words, [w for *_, w in plan], minimum=min(20, words // len(plan)))
    topic = topic.strip()
    sections = [{"heading": h, "goal": g, "words": b} for (h, g, _), b in zip(plan, budgets)]
    return Outline(title=title or topic[:1].upper() + topic[1:], kind=kind, sections=sections,
                   source="template")
