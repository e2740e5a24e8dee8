"""What of a generated paragraph is kept: echoes of the prompt, markup, junk and repeated sentences are dropped.

Small models asked for a paragraph sometimes open with a made-up title in markers (`<<Tides>>`), number their
sentences, quote the prompt's labels back, emit runs of digits, or say again what was already written (word for word
or nearly). Each of these is cut here, sentence by sentence, before a paragraph is accepted.
"""

from __future__ import annotations

import re

from blockgen.memory import split_sentences

PROMPT_LABELS = (
    "you are writing a",
    "outline (the section",
    "summary of what was written",
    "related earlier passages",
    "names and facts introduced",
    "the text so far",
    "the text ends with",
    "write the next paragraph",
    "continue the text",
    "the next paragraph",
    "the previous paragraph",
    "previous paragraphs",
    "this paragraph",
    "say something new",
)
_MARKERS = re.compile(r"<<[^<>]*>>|<<|>>|\*\*|__|^#+\s*")
# list numbering, "71 words -", and short labels such as "Main Findings:" at the start of a sentence
_LEADER = re.compile(
    r"^(?:(?:\d+(?:\.\d+)*[.):]\s*|\d+\s+words?\s*[-–—:]\s*|[A-Z][A-Za-z]{0,12}(?: [A-Z][a-z]{0,12})?:\s+)(?=\S))+"
)
_COUNT = re.compile(r"^\(?(?:about\s+)?\d+\s+words?\)?[.:]?$", re.IGNORECASE)
_GRAM = 4


def norm(sentence: str) -> str:
    return " ".join(re.findall(r"\w+", sentence.lower()))


def _grams(key: str) -> set[tuple[str, ...]]:
    words = key.split()
    return {tuple(words[i : i + _GRAM]) for i in range(len(words) - _GRAM + 1)}


class Novelty:
    """Sentences written so far, as exact keys and word 4-grams, to tell a repeat from a new sentence."""

    def __init__(self, texts: list[str] = (), overlap: float = 0.5):
        self.overlap, self.keys, self.grams = overlap, set(), set()
        for text in texts:
            for sentence in split_sentences(text):
                self.add(sentence)

    def copy(self) -> "Novelty":
        other = Novelty(overlap=self.overlap)
        other.keys, other.grams = set(self.keys), set(self.grams)
        return other

    def add(self, sentence: str) -> None:
        key = norm(sentence)
        self.keys.add(key)
        self.grams |= _grams(key)

    def is_repeat(self, sentence: str) -> bool:
        """Written before, word for word or with at least `overlap` of its 4-grams."""
        key = norm(sentence)
        if key in self.keys:
            return True
        grams = _grams(key)
        return bool(grams) and len(grams & self.grams) >= self.overlap * len(grams)


def _junk(sentence: str) -> bool:
    visible = [ch for ch in sentence if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    return letters < 0.6 * len(visible) or not re.search(r"[^\W\d_]{2,}", sentence)


def clean_paragraph(text: str, novelty: Novelty, *, repeats_only: bool = False) -> str:
    """The paragraph's new, clean sentences (those kept are added to `novelty`); repeats_only: drop repeated sentences
    and keep everything else as the model wrote it."""
    kept = []
    for sentence in split_sentences(text):
        if not repeats_only:
            sentence = " ".join(_LEADER.sub("", _MARKERS.sub(" ", sentence)).split())
            low = sentence.lower()
            if _junk(sentence) or _COUNT.match(sentence) or any(label in low for label in PROMPT_LABELS):
                continue
        if not sentence:
            continue
        if novelty.is_repeat(sentence):
            continue
        novelty.add(sentence)
        kept.append(sentence)
    return " ".join(kept)
