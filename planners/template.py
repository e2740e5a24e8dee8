"""Template planners: a fixed, kind-specific section plan filled with the request's topic, with exact budgets.

They give every request a valid outline without a model, and they are what a model-drafted outline falls back on,
part by part and on the record, where the model's text fails validation.
"""

from __future__ import annotations

from blockgen.errors import InvalidArgumentError
from blockgen.planners.budget import allocate_words
from blockgen.planners.outline import Outline

_REPORT = [
    ("Introduction", "Introduce {topic} and say why it matters.", 1.0),
    ("Background", "Explain the background and key ideas behind {topic}.", 1.4),
    ("Main findings", "Describe the most important facts and mechanisms of {topic}.", 1.8),
    ("Analysis", "Weigh causes, consequences and open questions about {topic}.", 1.4),
    ("Conclusion", "Sum up what the reader should remember about {topic}.", 0.8),
]
_STORY = [
    ("Opening", "Introduce the setting and the main character of a story about {topic}.", 1.0),
    ("Rising action", "A problem appears and grows.", 1.5),
    ("Turning point", "A decision or discovery changes everything.", 1.2),
    ("Climax", "The conflict comes to a head.", 1.2),
    ("Resolution", "Show how things end and what has changed.", 0.8),
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
    sections = [{"heading": h, "goal": g.format(topic=topic), "words": b} for (h, g, _), b in zip(plan, budgets)]
    return Outline(title=title or topic[:1].upper() + topic[1:], kind=kind, sections=sections,
                   source="template")
