"""Document quality measures: LongWriter's length score, distinct-4, repeated paragraphs, plan adherence."""

from __future__ import annotations

import re

import torch

_WORDS = re.compile(r"[A-Za-z0-9'’-]+|[\u4e00-\u9fff]")


def length_score(output_words: int, required_words: int) -> float:
    """S_l as LongWriter defines it: 100 at the required length, falling linearly (slower for overshoot)."""
    y, x = output_words, required_words
    if x <= 0:
        raise ValueError(f"required_words must be positive, got {x}")
    if y <= 0:
        return 0.0
    if y > x:
        return 100.0 * max(0.0, 1.0 - (y / x - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (x / y - 1.0) / 2.0)


def distinct_n(text: str, n: int = 4) -> float:
    """Unique word n-grams over all word n-grams (1.0: no n-gram repeats)."""
    words = [w.lower() for w in _WORDS.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_paragraphs(paragraphs: list[str], embedder=None, threshold: float = 0.95) -> int:
    """Paragraphs that repeat an earlier one: the same words, or an embedding at least `threshold` similar."""
    from blockgen.loading.embedder import embed

    texts = [p for p in paragraphs if p.strip()]
    if len(texts) < 2:
        return 0
    vectors = embed(texts, embedder)
    keys = [" ".join(w.lower() for w in _WORDS.findall(t)) for t in texts]
    repeats = 0
    for i in range(1, len(texts)):
        if keys[i] in keys[:i] or float((vectors[:i] @ vectors[i]).max()) >= threshold:
            repeats += 1
    return repeats


def plan_adherence(section_texts: list[str], section_latent: torch.Tensor, embedder=None) -> float:
    """Share of written sections whose embedding is nearest their own outline node."""
    from blockgen.loading.embedder import embed

    written = [(i, t) for i, t in enumerate(section_texts) if t.strip()]
    if not written:
        return 0.0
    vectors = embed([t for _, t in written], embedder)
    nearest = (vectors @ torch.nn.functional.normalize(section_latent.float(), dim=-1).T).argmax(-1).tolist()
    return sum(int(n == i) for (i, _), n in zip(written, nearest)) / len(written)


def document_quality(doc, embedder=None) -> dict:
    """All measures for a finished Document."""
    from blockgen.document.writer import count_words

    text = "\n\n".join(p.text for p in doc.paragraphs)
    sections = [" ".join(p.text for p in doc.section_paragraphs(i)) for i in range(len(doc.outline.sections))]
    return {
        "words": count_words(text),
        "required": doc.request.words,
        "length_score": length_score(count_words(text), doc.request.words),
        "distinct_4": distinct_n(text, 4),
        "repeated_paragraphs": repeated_paragraphs([p.text for p in doc.paragraphs], embedder),
        "plan_adherence": plan_adherence(sections, torch.tensor(doc.outline.latent)[1:], embedder),
    }
