"""What of a generated paragraph is kept: echoes of the prompt, markup, junk, meta or assistant talk, headings, an
unfinished last sentence and repeated sentences are dropped.

Small models asked for a paragraph sometimes open with a made-up title in markers (`<<Tides>>`) or a heading line,
number their sentences, quote the prompt's labels back, talk to the user ("Sure! Here is...", "I hope this helps"),
emit runs of digits, stop mid-sentence at the length limit, say a phrase again at once ("she stood, and she stood"),
or say again what was already written (word for word or nearly). Each of these is cut here, sentence by sentence,
before a paragraph is accepted; what is kept is joined into one paragraph.
"""

from __future__ import annotations

import re
from collections import Counter

from blockgen.document.metrics import OPENING_WORDS, ends_a_sentence, in_first_person, meta_phrases, sentence_opening
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
_MARKERS = re.compile(r"<<[^<>]*>>|<<|>>|\*\*|__|^#+\s*|(?:(?<=\s)|^)[-*•]\s+[A-Z][A-Za-z]{0,12}(?: [A-Za-z][a-z]{0,12})?:(?=\s)")
# bullets, list numbering, "71 words -", and short labels such as "Main findings:" at the start of a sentence
_LEADER = re.compile(
    r"^(?:(?:[-*•]\s+|\d+(?:\.\d+)*[.):]\s*|\d+\s+words?\s*[-–—:]\s*|[A-Z][A-Za-z]{0,12}(?: [A-Za-z][a-z]{0,12})?:\s+)"
    r"(?=\S))+"
)
_COUNT = re.compile(r"^\(?(?:about\s+)?\d+\s+words?\)?[.:]?$", re.IGNORECASE)
# a phrase said again at once: 3-6 words twice or more ("a hero of the sea, a hero of the sea"), 1-2 words three
# times or more ("she stood, and she stood, and she stood"); said once instead
_ECHO = re.compile(r"\b(\w+(?:\s+\w+){2,5})(?:,?\s+(?:and\s+)?\1\b)+", re.IGNORECASE)
_STUTTER = re.compile(r"\b(\w+(?:\s+\w+)?)(?:,?\s+(?:and\s+)?\1\b){2,}", re.IGNORECASE)
FRAME_KEPT = 2  # a paragraph keeps at most two sentences opening with the same three words (metrics.sentence_opening):
# a third is a loop on a sentence frame ("The economy is so complex... The economy is like a machine... The economy is")
_EMPHASIS = re.compile(r"(?<=[\w.!?,'\"])\*(?=[\s,.;:!?'\"]|$)|(?:(?<=\s)|^)\*(?=[\w'\"])")  # *word*
HEADING_WORDS = 6  # a line this short without a sentence end is a heading or a label, not prose
_GRAM = 4
_PHRASE = 8  # a run of this many words already written makes a sentence a repeat, however it goes on
_RECENT = 8  # sentences a new one is compared with word by word (a small model's loops: "You started to look at the
# sea. You started looking at the sea."), content words only, endings folded
_CONTAINED = 0.8  # share of a sentence's content words found in one recent sentence that makes it a near-repeat
ECHO_WORDS = 5  # a sentence this short with no content word beyond the last few sentences' only echoes them ("Tides
# work. The tides work. The cycle continues.")
_QUOTES = re.compile("[\"“”]")
_FUNCTION = frozenset("a an and the of in on to for with by at from its it is are was were be as or so but that this "
                      "these those then than there their they he she his her him you your i we our us my me not no "
                      "also just very can could would will had has have do did one".split())
_ASKING = frozenset("who what when where which why how".split())  # not content in a question asking back the goal
# a label before a colon at a sentence's start ("The early ideas: What had been created...")
_LABEL = re.compile(r"^([A-Z][\w'-]*(?: [\w'-]+){0,4}):\s+(?=\S)")


def norm(sentence: str) -> str:
    return " ".join(re.findall(r"\w+", sentence.lower()))


def _ngrams(key: str, n: int) -> list[tuple[str, ...]]:
    words = key.split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _grams(key: str) -> set[tuple[str, ...]]:
    return set(_ngrams(key, _GRAM))


def _phrases(key: str) -> set[tuple[str, ...]]:
    return set(_ngrams(key, _PHRASE))


class Novelty:
    """Sentences written so far, as exact keys, word 4-grams and 8-word phrases, to tell a repeat from a new
    sentence."""

    def __init__(self, texts: list[str] = (), overlap: float = 0.5, pinned: list[str] = ()):
        """texts: what was written; pinned: what was asked (a goal, the request's lines), compared with every new
        sentence as the last few sentences are, however much is written after it."""
        self.overlap, self.keys, self.grams, self.phrases = overlap, set(), set(), set()
        self.recent: list[frozenset[str]] = []
        for text in texts:
            for sentence in split_sentences(text):
                self.add(sentence)
        self.pinned: list[frozenset[str]] = []
        for text in pinned:
            for sentence in split_sentences(text):
                self.add(sentence)
                self.pinned.append(_content(norm(sentence)))

    def copy(self) -> "Novelty":
        other = Novelty(overlap=self.overlap)
        other.keys, other.grams, other.phrases = set(self.keys), set(self.grams), set(self.phrases)
        other.recent, other.pinned = list(self.recent), list(self.pinned)
        return other

    def add(self, sentence: str) -> None:
        key = norm(sentence)
        self.keys.add(key)
        self.grams |= _grams(key)
        self.phrases |= _phrases(key)
        self.recent = [*self.recent, _content(key)][-_RECENT:]

    def asked(self, text: str) -> bool:
        """Whether every content word of `text` (at least one) is in what was asked (the pinned lines)."""
        words = _content(norm(text))
        return bool(words) and words <= frozenset().union(*self.pinned)

    def is_repeat(self, sentence: str) -> bool:
        """Written before: word for word, with at least `overlap` of its 4-grams, sharing an 8-word phrase, or, for
        one of the last few sentences or a pinned one, with most of its content words (at least three of them); or a
        short sentence (ECHO_WORDS) or a question, outside dialogue, whose every content word those sentences already
        said."""
        key = norm(sentence)
        if key in self.keys or _phrases(key) & self.phrases:
            return True
        grams = _grams(key)
        if grams and len(grams & self.grams) >= self.overlap * len(grams):
            return True
        words = _content(key)
        near = self.recent + self.pinned
        if not _QUOTES.search(sentence):
            said = frozenset().union(*near)
            if words and len(key.split()) <= ECHO_WORDS and words <= said:
                return True  # a short echo
            if sentence.rstrip().endswith("?") and words - _ASKING and words - _ASKING <= said:
                return True  # a question asking back what was asked ("Who first studied it, and when?")
        return len(words) >= 3 and any(len(words & other) >= _CONTAINED * len(words) for other in near)


def content_stems(text: str) -> frozenset[str]:
    """A text's content words with common endings folded."""
    return _content(norm(text))


def _content(key: str) -> frozenset[str]:
    """A normalized sentence's content words with common endings folded (look, looks, looking, looked: one word)."""
    words = set()
    for word in key.split():
        if word in _FUNCTION or word.isdigit():
            continue
        for ending in ("ing", "ed", "es", "s"):
            if word.endswith(ending) and len(word) - len(ending) >= 3:
                word = word[: -len(ending)]
                break
        words.add(word)
    return frozenset(words)


def _junk(sentence: str) -> bool:
    """Mostly not letters, no word at all, or a sentence that repeats itself ("they stood there, they stood there")."""
    visible = [ch for ch in sentence if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if letters < 0.6 * len(visible) or not re.search(r"[^\W\d_]{2,}", sentence):
        return True
    grams = _ngrams(norm(sentence), _GRAM)
    if len(grams) >= 6 and len(set(grams)) < 0.75 * len(grams):
        return True
    # a phrase that keeps coming back inside one sentence ("the rollercoaster effect is created by the rollercoaster
    # effect, which creates the rollercoaster effect")
    pairs = content_pairs(sentence)
    return any(pairs.count(pair) >= 3 for pair in set(pairs))


# a sentence end inside what split_sentences keeps as one sentence ("...changed Europe. this innovation..."): after a word
# of three letters or more that is not an abbreviation; not a question or exclamation's closing quote, where a
# dialogue tag follows ('"Who is there?" she asked')
_LOWER_START = re.compile(r"(?:^|(?<=[A-Za-z]{3})(?<!etc)(?:[.!?]\)?|\.[\"”’])\s+)([a-z])(?![A-Z])")


def _capitalized(sentence: str) -> str:
    """Sentences that start with a small letter start with a capital ("the printing press was..."; "iPhone" stays)."""
    return _LOWER_START.sub(lambda m: m.group(0)[:-1] + m.group(1).upper(), sentence)


def content_pairs(text: str) -> list[tuple[str, str]]:
    """Consecutive content words of a text (function words and numbers dropped), as pairs: the phrases a small
    model's loops repeat."""
    words = [w for w in norm(text).split() if w not in _FUNCTION and not w.isdigit()]
    return list(zip(words, words[1:]))


def clean_paragraph(text: str, novelty: Novelty, *, repeats_only: bool = False, first_person: bool = True) -> str:
    """The paragraph's new, clean sentences (those kept are added to `novelty`); repeats_only: drop repeated sentences
    and keep everything else as the model wrote it; first_person=False (a report): sentences in the first person
    singular outside quotes are a narrator's or an assistant's voice, and dropped."""
    kept, frames = [], Counter()
    sentences = split_sentences(text)
    for n, sentence in enumerate(sentences):
        if not repeats_only:
            sentence = " ".join(_MARKERS.sub(" ", _EMPHASIS.sub("", sentence)).split())
            opening = sentence[:1] if sentence[:1] in ('"', "“") else ""  # a label inside a paragraph's quotes too
            body = _LEADER.sub("", sentence[len(opening):])
            label = _LABEL.match(body)
            if label and novelty.asked(label.group(1)):  # the goal's words as a label: "The early ideas: What..."
                body = body[label.end():]
            if len(body) < len(sentence) - len(opening):  # a leader or label went: the rest starts the sentence
                body = body[:1].upper() + body[1:]
            sentence = _ECHO.sub(r"\1", _STUTTER.sub(r"\1", opening + body)) if body else ""
            sentence = _capitalized(sentence)
            low = sentence.lower()
            if _junk(sentence) or _COUNT.match(sentence) or any(label in low for label in PROMPT_LABELS):
                continue
            if meta_phrases(sentence) or (not first_person and in_first_person(sentence)):
                continue
            if not ends_a_sentence(sentence) and (n == len(sentences) - 1 or len(sentence.split()) <= HEADING_WORDS):
                continue  # cut off at the length limit, or a heading
        if not sentence:
            continue
        if novelty.is_repeat(sentence):
            continue
        frame = sentence_opening(sentence)
        if not repeats_only and len(frame) == OPENING_WORDS:
            if frames[frame] >= FRAME_KEPT:
                continue
            frames[frame] += 1
        novelty.add(sentence)
        kept.append(sentence)
    while kept and not repeats_only and not ends_a_sentence(kept[-1]):
        kept.pop()  # an unfinished sentence whose continuation was dropped would end the paragraph mid-sentence
    text = " ".join(kept)
    return text if repeats_only else unquoted(text, whole=not first_person)


def unquoted(text: str, whole: bool) -> str:
    """Without a quotation mark that opens or closes nothing (a paragraph begun with '"There is...' and never
    closed, or whose closing mark a cut to length left out), and, when `whole` (a report: no dialogue), without
    quotes around the whole paragraph."""
    for mark in ('"', "“", "”"):
        count = text.count('"') if mark == '"' else text.count("“") + text.count("”")
        if count % 2 and text.startswith(mark):
            text = text[1:].lstrip()
        elif count % 2 and text.endswith(mark):
            text = text[:-1].rstrip()
    opened = text[:1] in ('"', "“") and text[-1:] in ('"', "”")
    if whole and opened and text.count('"') + text.count("“") + text.count("”") == 2:
        text = text[1:-1].strip()
    return text
