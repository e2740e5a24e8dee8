"""The model-driven planner: the block-diffusion model fills a fixed outline skeleton, then the draft is validated.

Structure comes from the skeleton, content from the model. Infill (`blockgen.engine.infill`) runs first over a
skeleton of the title and one heading per section, then, with those headings fixed, over one skeleton per section
for its goal and beats. Budgets are not
the model's to choose: they are allocated so that they sum to the requested length.

Every slot's text is cleaned (first line, no list numbering or markdown) and checked (long enough, not too long, not
a copy of another part). Slots that fail are drawn again with sampling; what still fails is replaced from the
template plan, and each replacement is written into `Outline.repairs` with the model's text and the reason. A draft
is never swapped for a template wholesale.
"""

from __future__ import annotations

import logging
import re
import unicodedata

from blockgen.engine.infill import Slot, infill
from blockgen.errors import InvalidArgumentError
from blockgen.planners.budget import allocate_words
from blockgen.planners.outline import Outline
from blockgen.planners.template import template_outline

log = logging.getLogger("blockgen.planner")

SLOT_TOKENS = {"title": 16, "heading": 12, "goal": 32, "beat": 24}
WORD_LIMITS = {"title": (1, 16), "heading": (1, 12), "goal": (3, 40), "beat": (3, 30)}
_NUMBERING = re.compile(r"^(?:(?:section|part|chapter)\s+\d+\s*[:.)-]\s*|\d+(?:\.\d+)*[.)]\s+|\d+(?:\.\d+)+:\s*"
                        r"|[-*+•]\s+|#+\s*)", re.IGNORECASE)
_LABEL = re.compile(r"^(?:title|heading|goal|key points?|point|beat)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{2,}")


def section_count(words: int) -> int:
    """Sections for a document of `words` words: 1 below 150, 3 below 400, then one per ~300 words (4 to 12)."""
    if words < 150:
        return 1
    if words < 400:
        return 3
    return max(4, min(12, round(words / 300)))


def clean(text: str) -> str:
    """A slot's text as plan text: its first line, without list numbering, labels, markdown or wrapping quotes."""
    line = next((part for part in text.splitlines() if part.strip()), "")
    line = line.replace("**", "").replace("__", "").replace("`", "").strip()
    for _ in range(3):
        stripped = _LABEL.sub("", _NUMBERING.sub("", line)).strip()
        if stripped == line:
            break
        line = stripped
    line = line.rstrip(":;,-–").strip()
    if len(line) >= 2 and line[0] in "\"'“" and line[-1] in "\"'”":
        line = line[1:-1].strip()
    return " ".join(line.split())


_STOP = frozenset("a an and the of in on to for with by at from its it is are as or how what why".split())


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"\w+", text.lower()) if w not in _STOP)


def similar(a: str, b: str, limit: float = 0.6) -> bool:
    """Whether two plan texts share most of their content words (shared / the larger set >= limit)."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return a.strip().lower() == b.strip().lower()
    return len(wa & wb) / max(len(wa), len(wb)) >= limit


def check(text: str, role: str, earlier: list[str]) -> str | None:
    """Why `text` cannot be a plan's `role` (title / heading / goal / beat), or None when it can."""
    low, high = WORD_LIMITS[role]
    words = text.split()
    if not _WORD.search(text):
        return "no words"
    if any(ch == "\ufffd" or (unicodedata.category(ch)[0] == "C") for ch in text):
        return "control or broken characters"
    visible = [ch for ch in text if not ch.isspace()]
    if sum(ch.isalpha() for ch in visible) < 0.6 * len(visible):
        return "mostly not letters"
    if len(words) < low:
        return f"fewer than {low} words"
    if len(words) > high:
        return f"more than {high} words"
    copied = next((e for e in earlier if similar(text, e)), None)
    if copied is not None:
        return f"too close to {copied!r}"
    return None


def _prefix(lm, request: str) -> list[int]:
    if lm.has_chat_template:
        return lm.encode([{"role": "user", "content": request}], chat=True)
    return lm.encode(request + "\n\n")


def _ask_structure(kind: str, topic: str, n: int) -> str:
    unit = "parts" if kind == "story" else "sections"
    return f"Give a title and {n} {unit} headings for a {kind} about {topic}. One short heading per line."


def _ask_details(kind: str, topic: str, title: str, headings: list[str], current: int, beats: int) -> str:
    what = "what happens in it" if kind == "story" else "its goal"
    listing = "\n".join(f"{i + 1}. {h}" for i, h in enumerate(headings))
    return (f"This is the plan of a {kind} titled \"{title}\" about {topic}:\n{listing}\n\n"
            f"For part {current + 1}, \"{headings[current]}\", write {what} in one sentence, then {beats} key points.")


class _Draft:
    """Slots by name -> (role, text), validated together so that copies across slots are caught."""

    def __init__(self, lm, kind: str, topic: str, seed: int, attempts: int, temperature: float):
        self.lm, self.kind, self.topic, self.seed = lm, kind, topic, seed
        self.attempts, self.temperature = attempts, temperature
        self.text: dict[str, str] = {}
        self.raw: dict[str, str] = {}
        self.repairs: list[str] = []

    def fill(self, request: str, parts: list, roles: dict[str, str], fallback: dict[str, str]) -> None:
        """Infill `parts`, then redraw failing slots (others fixed) up to `attempts` times, then fall back."""
        prefix = _prefix(self.lm, request)
        todo = list(roles)
        for attempt in range(self.attempts + 1):
            temperature = max(self.temperature, 0.8) if attempt else self.temperature
            drawn = infill(self.lm, self._with_fixed(parts, todo), prefix=prefix, seed=self.seed + 7919 * attempt,
                           temperature=temperature, top_p=0.9 if temperature > 0 else None)
            for name in todo:
                self.raw[name] = drawn[name]
                self.text[name] = clean(drawn[name])
            todo = [name for name in roles if self._problem(name, roles) is not None]
            if not todo:
                return
        for name in todo:
            reason = self._problem(name, roles)
            replacement = fallback.get(name, "")
            where = name.replace("_", " ")
            if replacement:
                self.repairs.append(f"{where}: the model wrote {self.raw[name].strip()!r} ({reason}); "
                                    f"used {replacement!r}")
            else:
                self.repairs.append(f"{where}: the model wrote {self.raw[name].strip()!r} ({reason}); left out")
            self.text[name] = replacement

    def _with_fixed(self, parts: list, todo: list[str]) -> list:
        """The skeleton with slots already accepted turned into fixed text."""
        out = []
        for part in parts:
            if isinstance(part, Slot) and part.name not in todo:
                out.append(self.text[part.name])
            else:
                out.append(part)
        return out

    def _problem(self, name: str, roles: dict[str, str]) -> str | None:
        """Why this slot's text fails: checked against every part of the plan that comes before it."""
        order = list(self.text)
        earlier = [self.text[other] for other in order[: order.index(name)] if self.text[other]]
        return check(self.text[name], roles[name], earlier)

def draft_outline(
    lm,
    topic: str,
    words: int,
    kind: str = "report",
    *,
    sections: int | None = None,
    beats: int | None = None,
    seed: int = 0,
    attempts: int = 2,
    temperature: float = 0.7,
) -> Outline:
    """An outline drafted by `lm` for a `kind` ("report" / "story") about `topic` of `words` words.

    sections / beats: how many sections and beats per section (by default from the length). attempts: redraws of
    failing slots before they are replaced from the template plan (each replacement recorded in `repairs`).
    temperature: sampling of the first draft (seeded: the same seed gives the same outline); greedy drafts of small
    models tend to copy one line into every slot.
    """
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidArgumentError("topic", topic, "is empty")
    if kind not in ("report", "story"):
        raise InvalidArgumentError("kind", kind, "must be 'report' or 'story'")
    if not isinstance(words, int) or isinstance(words, bool) or words < 1:
        raise InvalidArgumentError("words", words, "must be a positive int")
    n = section_count(words) if sections is None else sections
    if not isinstance(n, int) or not 1 <= n <= 50:
        raise InvalidArgumentError("sections", sections, "must be an int in [1, 50]")
    weights = [1.0] * n if n < 3 else [0.8] + [1.0] * (n - 2) + [0.7]
    budgets = allocate_words(words, weights, minimum=min(20, words // n))
    per = beats if beats is not None else (2 if words / n < 500 else 3)
    if not isinstance(per, int) or not 0 <= per <= 8:
        raise InvalidArgumentError("beats", beats, "must be an int in [0, 8]")
    topic = topic.strip()
    fallback = _fallback(topic, kind, n)
    draft = _Draft(lm, kind, topic, seed, attempts, temperature)

    parts: list = ["Title: ", Slot("title", SLOT_TOKENS["title"]), "\n\n"]
    roles = {"title": "title"}
    for i in range(n):
        name = f"section_{i + 1:02d}_heading"
        parts += [f"{i + 1}. ", Slot(name, SLOT_TOKENS["heading"]), "\n"]
        roles[name] = "heading"
    draft.fill(_ask_structure(kind, topic, n), parts, roles, fallback)

    headings = [draft.text[f"section_{i + 1:02d}_heading"] for i in range(n)]
    for i in range(n):  # one skeleton per section keeps every canvas short, however many sections there are
        stem = f"section_{i + 1:02d}"
        parts: list = [f"{i + 1}. {headings[i]}\nGoal: ", Slot(stem + "_goal", SLOT_TOKENS["goal"]), "\n"]
        roles = {stem + "_goal": "goal"}
        for b in range(per):
            parts += ["- ", Slot(f"{stem}_beat_{b + 1}", SLOT_TOKENS["beat"]), "\n"]
            roles[f"{stem}_beat_{b + 1}"] = "beat"
        draft.fill(_ask_details(kind, topic, draft.text["title"], headings, i, per), parts, roles, fallback)

    plan = []
    for i, budget in enumerate(budgets):
        stem = f"section_{i + 1:02d}"
        plan.append({"heading": draft.text[stem + "_heading"], "goal": draft.text.get(stem + "_goal", ""),
                     "beats": [t for b in range(per) if (t := draft.text.get(f"{stem}_beat_{b + 1}"))],
                     "words": budget})
    for repair in draft.repairs:
        log.info("outline repair: %s", repair)
    return Outline(title=draft.text["title"], kind=kind, sections=plan, source="model", repairs=draft.repairs)


def _fallback(topic: str, kind: str, n: int) -> dict[str, str]:
    """Template text for every slot of an n-section plan (beats have none: a failed beat is left out)."""
    template = template_outline(topic, 1000, kind)
    plan = template.sections
    out = {"title": template.title}
    used: dict[str, int] = {}
    for i in range(n):
        pick = plan[0] if n == 1 else plan[round(i * (len(plan) - 1) / (n - 1))]
        used[pick.heading] = used.get(pick.heading, 0) + 1
        heading = pick.heading if used[pick.heading] == 1 else f"{pick.heading} ({used[pick.heading]})"
        out[f"section_{i + 1:02d}_heading"] = heading
        out[f"section_{i + 1:02d}_goal"] = pick.goal
    return out
