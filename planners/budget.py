"""Word budgets that add up to the requested length exactly (AgentWrite-style planning)."""

from __future__ import annotations

from blockgen.errors import InvalidArgumentError, OutlineError

MIN_SECTION_WORDS = 20
MAX_WORDS = 200_000


def allocate_words(total: int, weights: list[float], minimum: int = MIN_SECTION_WORDS) -> list[int]:
    """Split `total` words over sections in proportion to `weights`, each at least `minimum`, summing to `total`.

    Largest-remainder rounding keeps the sum exact.
    """
    if not isinstance(total, int) or isinstance(total, bool) or not 1 <= total <= MAX_WORDS:
        raise InvalidArgumentError("words", total, f"must be an int between 1 and {MAX_WORDS}")
    if not weights or any(w <= 0 for w in weights):
        raise InvalidArgumentError("weights", weights, "need one positive weight per section")
    n = len(weights)
    if total < n * minimum:
        raise OutlineError("outline", f"{n} sections need at least {n * minimum} words ({minimum} each); "
                           f"{total} were asked for")
    spare = total - n * minimum
    scale = spare / sum(weights)
    shares = [w * scale for w in weights]
    budget = [minimum + int(s) for s in shares]
    by_remainder = sorted(range(n), key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in by_remainder[: total - sum(budget)]:
        budget[i] += 1
    return budget


def rebudget(outline, total: int, minimum: int = MIN_SECTION_WORDS):
    """A copy of the outline whose section budgets keep their proportions and sum to `total`."""
    words = allocate_words(total, [float(s.words) for s in outline.sections], minimum)
    sections = [s.model_copy(update={"words": w}) for s, w in zip(outline.sections, words)]
    return outline.model_copy(update={"sections": sections, "latent": outline.latent})
