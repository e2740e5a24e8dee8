"""An entity/fact table: names introduced in the text, where they first appear, and what was said of them then.

Names are runs of capitalised words that do not merely start a sentence (or that recur), the way a reader notices a
new character or place. The table is rendered into later contexts to keep stories consistent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from blockgen.memory.summary import split_sentences

_NAME = re.compile(r"\b([A-Z][a-z]+(?:[ -](?:[A-Z][a-z]+|of|de|van|von))*(?: [A-Z][a-z]+)?)\b")
_COMMON = frozenset(
    "The A An And But Or If When Then There This That These Those It Its He She They We You I In On At By For From "
    "With As After Before While Once Now Here Yes No Not So Of To Into Over Under Every Each Some Many Most All One "
    "Two Three First Next Last Finally However Meanwhile Today Tomorrow Yesterday Mr Mrs Ms Dr Chapter Section".split()
)


@dataclass
class Entity:
    name: str
    first_paragraph: int
    fact: str  # the sentence that introduced it
    mentions: int = 1
    aliases: set[str] = field(default_factory=set)


class EntityTable:
    def __init__(self):
        self.entities: dict[str, Entity] = {}
        self._pending: dict[str, tuple[int, str]] = {}  # sentence-initial words seen once: confirmed if they recur

    def update(self, paragraph: int, text: str) -> list[Entity]:
        """Record the names in a written paragraph (its index); return the entities it introduced."""
        new = []
        for sentence in split_sentences(text):
            for match in _NAME.finditer(sentence):
                name = match.group(1).strip()
                words = name.split()
                while words and words[0] in _COMMON:
                    words = words[1:]
                if not words:
                    continue
                name = " ".join(words)
                at_start = sentence.startswith(match.group(1)) and name == match.group(1)
                if name in self.entities:
                    self.entities[name].mentions += 1
                elif at_start and name not in self._pending:
                    self._pending[name] = (paragraph, sentence)
                else:
                    seen_before = name in self._pending
                    first_paragraph, fact = self._pending.pop(name, (paragraph, sentence))
                    self.entities[name] = Entity(name, first_paragraph, fact, 2 if seen_before else 1)
                    new.append(self.entities[name])
        return new

    def render(self, limit: int = 12, fact_chars: int = 120) -> str:
        """The most mentioned entities with the sentence that introduced each."""
        ranked = sorted(self.entities.values(), key=lambda e: (-e.mentions, e.first_paragraph, e.name))[:limit]
        return "\n".join(f"- {e.name}: {e.fact[:fact_chars]}" for e in ranked)
