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
_STORY = [  # no goal names the story's topic (the title does): a node that did would stand nearest every scene.
    # {who} is the story's main character as the request names it (protagonist()): goals that said "the hero" had
    # the model write about "the hero" ("The hero is the only one who can make the hero's mission possible")
    ("Opening", "An ordinary day: introduce the place, {who} and their daily life.", 1.0),
    ("Rising action", "Trouble begins for {who}: a problem appears, grows and worries everyone.", 1.5),
    ("Turning point", "A discovery or a hard decision changes everything for {who}.", 1.2),
    ("Climax", "The danger is at its worst; {who} must act, with everything at stake.", 1.2),
    ("Resolution", "The ending: peace at last, {who} at home again, and how life is different now.", 0.8),
]
MAIN_CHARACTER = "the main character"  # when the request names nobody first

# Where a story request's leading noun phrase ends ("two rival bakers | in a mountain village must cook ..."):
# prepositions, relative words, modals and auxiliaries; and a word ending in -s before one of _OBJECT_STARTS is a
# verb ("a lighthouse keeper's daughter | relights the lamp", "a cartographer | discovers that ...").
_PHRASE_ENDS = frozenset(
    "that who which whose whom where when while as because after before during in on at with without from to for of "
    "into onto across through over under near by about against among between must can could will would shall should "
    "may might is are was were has have had does do did gets got goes went finds found learns learned tries tried "
    "wants needs".split())
_OBJECT_STARTS = frozenset("the a an her his their its my our your that to how what why whether up out one".split())
_DETERMINERS = frozenset("a an the one some".split())
_COUNTS = frozenset("two three four five six seven several my".split())


def protagonist(topic: str) -> str:
    """The story's main character as the request names it first: its leading noun phrase when it starts with an
    article, a number or a name, with "the" for a leading "a"/"an" ("a lighthouse keeper's daughter relights the
    lamp" -> "the lighthouse keeper's daughter"); "the main character" when no phrase ends within five words or the
    request starts otherwise ("pirates hunt for treasure", "how the moon got its craters")."""
    words = topic.strip().rstrip(".!?").split()
    phrase: list[str] = []
    for i, word in enumerate(words[:6]):
        bare = word.lower().strip(",;:\"'")
        following = words[i + 1].lower() if i + 1 < len(words) else ""
        verb_like = (phrase and len(phrase) > (phrase[0].lower() in _DETERMINERS) and bare.endswith("s")
                     and not bare.endswith(("'s", "ss", "us", "is")) and following in _OBJECT_STARTS)
        if bare in _PHRASE_ENDS or verb_like:
            break
        phrase.append(word.rstrip(",;:"))
        if word.endswith((",", ";", ":")):  # "a dog, a cat and a mouse" -> "a dog"
            break
    else:
        if len(words) > 6:
            return MAIN_CHARACTER
    if not phrase or len(phrase) > 5 or (len(phrase) == 1 and phrase[0].lower() in _DETERMINERS):
        return MAIN_CHARACTER
    named = all(w[:1].isupper() for w in phrase)  # "Sherlock Holmes"
    if not named and phrase[0].lower() not in _DETERMINERS | _COUNTS:  # "pirates hunt ...", "how the moon ..."
        return MAIN_CHARACTER
    if phrase[0].lower() in ("a", "an"):
        phrase[0] = "the"
    elif phrase[0].lower() in _COUNTS - {"my"}:  # "two rival bakers" -> "the two rival bakers"
        phrase.insert(0, "the")
    elif phrase[0].lower() in _DETERMINERS:
        phrase[0] = phrase[0].lower()
    return " ".join(phrase)


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
    who = protagonist(topic) if kind == "story" else ""
    sections = [{"heading": h, "goal": g.format(who=who), "words": b} for (h, g, _), b in zip(plan, budgets)]
    return Outline(title=title or topic[:1].upper() + topic[1:], kind=kind, sections=sections,
                   source="template")
