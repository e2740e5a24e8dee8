"""Drawing candidate tokens from logits, and the confidence of each candidate."""

from __future__ import annotations

from functools import lru_cache

import torch

from blockgen.errors import InvalidArgumentError

CONFIDENCES = ("probability", "margin", "entropy", "random")
DRY_MAX_PENALTY = 1e4  # the most DRY takes off a logit (at the default settings, a repeat of 19 tokens)


def filter_top_k(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    if top_k is None or top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


_NUCLEUS_K = 256  # the nucleus is looked for among this many top tokens first (a full sort only if it is wider)


def _nucleus(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranked logits, their token ids): the top tokens in descending order, those outside the nucleus at -inf. The
    nucleus keeps the most likely tokens up to and including the one whose cumulative probability crosses top_p. The
    top _NUCLEUS_K tokens are ranked first and the vocabulary is sorted only when the nucleus is wider than them (a
    sort of 50k-token rows at every step was a tenth of a CPU decode's time)."""
    k = min(logits.shape[-1], _NUCLEUS_K)
    ranked, order = torch.topk(logits, k, dim=-1)  # descending
    cumulative = (ranked - torch.logsumexp(logits, -1, keepdim=True)).exp().cumsum(-1)
    if k < logits.shape[-1] and not bool((cumulative[..., -1] > top_p).all()):
        ranked, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = ranked.softmax(-1).cumsum(-1)
    drop = cumulative > top_p
    drop[..., 1:] = drop[..., :-1].clone()  # keep the token that crosses top_p
    drop[..., 0] = False
    return ranked.masked_fill(drop, float("-inf")), order


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token ids (...,) from logits (..., V): argmax at temperature 0, else Gumbel-max in float64 (as LLaDA does)."""
    if temperature < 0:
        raise InvalidArgumentError("temperature", temperature, "must be >= 0")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidArgumentError("top_p", top_p, "must be in (0, 1]")
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    filtered = filter_top_k(logits.double(), top_k)
    order = None
    if top_p is not None and top_p < 1.0:  # draw among the ranked nucleus only, not the whole vocabulary
        filtered, order = _nucleus(filtered, top_p)
    noise = torch.rand(filtered.shape, dtype=torch.float64, device=filtered.device, generator=generator)
    # argmax(exp(l) / (-log u)^T) == argmax(l / T + Gumbel): LLaDA's float64 form
    picked = (filtered.exp() / (-torch.log(noise)) ** temperature).argmax(dim=-1)
    return picked if order is None else order.gather(-1, picked[..., None])[..., 0]


def penalized(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (as transformers applies it): where `seen` (broadcast against logits) is True, a
    logit is divided by `penalty` when positive and multiplied by it when negative."""
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def token_distribution(logits: torch.Tensor, *, temperature: float, top_k: int | None = None,
                       top_p: float | None = None) -> torch.Tensor:
    """The distribution `sample_tokens` draws from at this temperature (> 0): (..., V) float64 probabilities, zero
    outside the top-k and the nucleus (which is taken before the temperature, as sample_tokens takes it)."""
    if temperature <= 0:
        raise InvalidArgumentError("temperature", temperature, "a distribution needs a temperature > 0")
    filtered = filter_top_k(logits.double(), top_k)
    if top_p is not None and top_p < 1.0:
        ranked, order = _nucleus(filtered, top_p)
        return torch.zeros_like(filtered).scatter(-1, order, (ranked / temperature).softmax(-1))
    return (filtered / temperature).softmax(-1)


def confidence_of(
    logits: torch.Tensor, tokens: torch.Tensor, kind: str = "probability", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Confidence (...,) of the candidate tokens: its probability, the top-2 margin, negative entropy, or random."""
    if kind == "random":
        return torch.rand(tokens.shape, device=tokens.device, generator=generator)
    if kind not in CONFIDENCES:
        raise InvalidArgumentError("confidence", kind, f"must be one of {CONFIDENCES}")
    logits = logits.float()
    if kind == "entropy":  # the one measure that needs the whole distribution
        probs = logits.softmax(-1)
        return (probs * torch.log(probs.clamp_min(1e-12))).sum(-1)
    # probabilities of single tokens from their logits and the row's log-normalizer: no softmax over the vocabulary
    normalizer = torch.logsumexp(logits, -1, keepdim=True)
    if kind == "probability":
        return (logits.gather(-1, tokens[..., None]) - normalizer)[..., 0].exp()
    top2 = (logits.topk(2, dim=-1).values - normalizer).exp()
    return top2[..., 0] - top2[..., 1]


def dry_penalties(history: list[int], *, multiplier: float, base: float = 1.75, allowed_length: int = 2,
                  breakers: frozenset[int] | set[int] = frozenset(), max_length: int = 40) -> dict[int, float]:
    """The DRY ("don't repeat yourself") penalty of each token that would extend a repeat of the text so far, as
    llama.cpp and koboldcpp define it: for every earlier place where the history's last tokens already occurred
    (L of them matching, counted back from the end and stopping at a sequence breaker), the token that followed
    them there would make the repeat L + 1 long; when L >= allowed_length it gets multiplier * base ** (L -
    allowed_length), the largest over its occurrences. A breaker (a newline, a colon, a quote) is never penalized
    and never matched across, so lists and dialogue may repeat their form. Returns {token id: penalty}; an empty dict
    when nothing repeats."""
    n = len(history)
    if n < 2 or multiplier <= 0:
        return {}
    last = history[-1]
    if last in breakers:
        return {}
    longest: dict[int, int] = {}
    for j in range(n - 2, -1, -1):  # history[j] == last: history[j + 1] would continue the repeat
        if history[j] != last:
            continue
        follower = history[j + 1]
        if follower in breakers:
            continue
        length = 1
        while (length < max_length and j - length >= 0 and history[j - length] == history[n - 1 - length]
               and history[j - length] not in breakers):
            length += 1
        if length >= allowed_length and length > longest.get(follower, 0):
            longest[follower] = length
    return {t: multiplier * base ** (length - allowed_length) for t, length in longest.items()}


@lru_cache(maxsize=4)
def _token_texts(tokenizer) -> tuple[str, ...]:
    """Each token id's text, decoded once per tokenizer."""
    return tuple(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))


@lru_cache(maxsize=256)
def _holding(tokenizer, breaker: str) -> frozenset[int]:
    return frozenset(i for i, text in enumerate(_token_texts(tokenizer)) if breaker in text)


def breaker_ids(tokenizer, breakers: tuple[str, ...]) -> frozenset[int]:
    """The ids of the tokens whose text holds any of `breakers` (DRY's sequence breakers): the vocabulary is decoded
    once per tokenizer and each breaker looked for once, so requests that vary them cost a scan, not a decode."""
    return frozenset().union(*(_holding(tokenizer, b) for b in breakers if b))


def dry_for(history: list[int], options, breakers: frozenset[int]) -> dict[int, float]:
    """DRY's penalties of the token after `history` under `options` (a GenerationConfig), each capped at
    DRY_MAX_PENALTY so a long repeat stays a large finite penalty in half precision, not -inf."""
    penalties = dry_penalties(history, multiplier=options.dry_multiplier, base=options.dry_base,
                              allowed_length=options.dry_allowed_length, breakers=breakers)
    return {token: min(amount, DRY_MAX_PENALTY) for token, amount in penalties.items()}


def apply_dry(logits: torch.Tensor, history: list[int], options, breakers: frozenset[int]) -> torch.Tensor:
    """logits (V,) of the token after `history`, less DRY's penalties under `options` (a GenerationConfig), in place."""
    penalties = dry_for(history, options, breakers)
    if penalties:
        ids = torch.tensor(list(penalties), device=logits.device)
        logits[ids] -= torch.tensor(list(penalties.values()), dtype=logits.dtype, device=logits.device)
    return logits
