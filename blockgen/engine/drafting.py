"""The drafting loop for gated adapters: the base writes every token, the adapter's masks draft the ones after it,
and a draft is kept only where the base writes that very token.

Each forward runs, for one row, the newest token the base wrote (not cached yet), the drafts of the last forward and
`block_size` mask tokens after them:

    [ t | d_1 ... d_m | M_1 ... M_k ]

t and the drafts attend causally and never to a mask, with the adapter's gate closed, so their outputs are the
base's own next-token predictions, at all those positions in one pass. The base's token after t is compared with
d_1, the one after d_1 with d_2, and so on: the drafts that agree are kept, and the base's token after the last kept
one is written too, so a forward writes 1 + (drafts kept) tokens and the text is the base's own. Greedy, it is the
base's argmax text token for token. Sampling, the drafts are drawn from the masks' distributions q, each is kept
with probability min(1, p/q) (p the base's, processed as the AR loop processes it: penalty, temperature, top-k/p)
and the first refused one is replaced by a draw from max(0, p - q) renormalized (speculative sampling), so every
token follows the base's distribution given the text before it (not the AR loop's random stream), and more drafts
are kept than by asking the base's own draw to equal a greedy draft.

The masks attend to everything before them and to each other, with the gate open; when every draft was kept, their
predictions become the next forward's drafts (the leading run whose probability reaches `draft_threshold`),
otherwise the next forward starts without drafts. The kept tokens' keys and values stay cached, the rest are
dropped (`KVCache.trim`).

With `draft_tree` the pass holds a block of masks after every draft, each block seeing t and the drafts up to its
own place: [t | d_1 ... d_m | masks after t | masks after d_1 | ... | masks after d_m]. Whichever draft is refused,
the block after the last kept one drafts the next forward, so no forward goes without drafts; it costs k (m + 1)
mask rows instead of k, little on a GPU, where a step this small is bound by its kernel launches, not its rows.

Rows decode one after another (each its own cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from blockgen.engine.decode import DecodeSettings, FinishEvent, StepEvent, _check, ntk_factor
from blockgen.engine.sampling import apply_dry, penalized, sample_tokens, token_distribution
from blockgen.errors import InvalidArgumentError
from blockgen.models.cache import KVCache
from blockgen.models.decoder import Decoder
from blockgen.models.family import Family


DRAFT_THRESHOLD = 0.1  # a draft's probability to be proposed, unless a generation says: proposals are verified


def _draft_mask(cached: int, base: int, masks: int, device, after: list[int] | None = None) -> torch.Tensor:
    """(1, 1, n, cached + n) bool over the cached keys and a pass of `base` rows (t and the drafts) followed by one
    block of `masks` masks for each entry j of `after` (default: [base - 1], one block after the last draft): the
    base rows causal and blind to the masks; block j seeing the cache, base rows 0..j and its own masks."""
    after = [base - 1] if after is None else after
    n = base + masks * len(after)
    mask = torch.zeros(n, cached + n, dtype=torch.bool, device=device)
    mask[:, :cached] = True
    rows = torch.arange(base, device=device)
    mask[:base, cached : cached + base] = rows[None, :] <= rows[:, None]
    for b, j in enumerate(after):
        lo = base + b * masks
        mask[lo : lo + masks, cached : cached + j + 1] = True
        mask[lo : lo + masks, cached + lo : cached + lo + masks] = True
    return mask[None, None]


class _Penalty:
    """CTRL's repetition penalty and DRY over a row's context (or its generated tokens), per base position of a
    forward: the position after draft j also sees drafts 1..j."""

    def __init__(self, s: DecodeSettings, vocab: int, seen: list[int], device):
        self.options, self.breakers = s.options, s.dry_breaker_ids
        self.penalty = s.options.repetition_penalty
        self.history = list(seen)  # what DRY matches against
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
        if self.penalty != 1.0 and seen:
            self.seen[torch.tensor(seen, device=device)] = True

    def add(self, tokens: list[int]) -> None:
        self.history += tokens
        if self.penalty != 1.0 and tokens:
            self.seen[torch.tensor(tokens, device=self.seen.device)] = True

    def __call__(self, logits: torch.Tensor, drafts: list[int]) -> torch.Tensor:
        """logits (m + 1, V) at t and the m drafts."""
        if self.penalty != 1.0:
            seen = self.seen[None].repeat(logits.shape[0], 1)
            for j, token in enumerate(drafts):
                seen[j + 1 :, token] = True
            logits = penalized(logits, seen, self.penalty)  # a new tensor
        elif self.options.dry_multiplier:
            logits = logits.clone()  # the model's output is left as it was
        if self.options.dry_multiplier:
            for j in range(logits.shape[0]):
                apply_dry(logits[j], self.history + drafts[:j], self.options, self.breakers)
        return logits


def speculate(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling over one pass: q (m, V) the distributions the m drafts (a LongTensor) were drawn from,
    p (m, V) the base's where each is checked (after t, then after each draft before it). Draft j is kept with
    probability min(1, p_j(d) / q_j(d)); the first one that is not is replaced by a draw from max(0, p_j - q_j)
    renormalized. Returns (drafts kept, that replacement), 0-dim tensors on p's device, read with the pass's other
    numbers in one go (the replacement is drawn whatever happens, and read only when a draft was refused); when all
    are kept the caller draws the next token as the AR loop does. Each token so written follows p exactly."""
    m = drafts.shape[0]
    rows = torch.arange(m, device=p.device)
    u = torch.rand(m, dtype=torch.float64, generator=generator, device=p.device)
    kept = (u * q[rows, drafts] < p[rows, drafts]).long().cumprod(0).sum()
    at = kept.clamp(max=m - 1)
    rest = (p[at] - q[at]).clamp_min(0)
    rest = torch.where(rest.sum() > 0, rest, p[at])
    return kept, torch.multinomial(rest / rest.sum(), 1, generator=generator)[0]


def _decode_row(model: Decoder, family: Family, row: int, prompt: list[int], s: DecodeSettings,
                stop_check: Callable[[int, list[int]], int | None] | None, factor: float | None,
                tree: bool) -> Iterator:
    o, k, mask_id = s.options, s.block_size, family.mask_token_id
    threshold = DRAFT_THRESHOLD if o.draft_threshold is None else o.draft_threshold
    sampling = {"temperature": o.temperature, "top_k": o.top_k, "top_p": o.top_p}
    device, vocab = model.device, model.config.vocab_size
    cache = KVCache.for_model(model, 1, len(prompt) + s.max_new_tokens + k * (k + 1 if tree else 1) + 1)
    if len(prompt) > 1:
        model(torch.tensor([prompt[:-1]], device=device), cache=cache, logits_at=torch.tensor([0], device=device),
              ntk_factor=factor)
    penalty = _Penalty(s, vocab, [] if o.penalty_scope == "generated" else prompt, device)
    stops = set(s.stop_token_ids)
    last, drafts, out, step = prompt[-1], [], [], 0
    q = None  # the distributions the drafts were drawn from (sampling)
    # the drafts' own draws (proposals, acceptance, replacements) come from a generator of their own, so the base's
    # draws, where no draft is proposed, are the AR loop's very stream
    draws = None
    if s.generator is not None:
        draws = torch.Generator(device=s.generator.device).manual_seed(s.generator.initial_seed() ^ 0x5DEECE66D)
    while True:
        m, cached = len(drafts), cache.length
        after = list(range(m + 1)) if tree else [m]  # the drafts each block of masks follows
        ids = torch.tensor([[last, *drafts] + [mask_id] * (k * len(after))], device=device)
        where = list(range(cached, cached + m + 1)) + [cached + j + 1 + i for j in after for i in range(k)]
        raw = model(ids, positions=torch.tensor([where], device=device), cache=cache,
                    attn_mask=_draft_mask(cached, m + 1, k, device, after), lora_gate=m + 1, ntk_factor=factor)[0]
        scores = penalty(raw[: m + 1], drafts).float()  # the penalty in the model's dtype, as the AR loop applies it
        masks = raw[m + 1 :].float()
        sure = masks.softmax(-1).amax(-1) >= threshold  # (blocks * k,)
        # every number the host needs from this pass, read in one go: the base's tokens (greedy) or the kept count,
        # the replacement and the next token (sampling); the drafts of every block and whether each is proposed
        if o.temperature == 0:
            head = scores.argmax(-1)
            proposals = masks.argmax(-1)
        else:
            head = torch.stack([*speculate(token_distribution(scores[:m], **sampling), q,
                                           torch.tensor(drafts, device=device), draws)] if m else
                               [torch.zeros((), dtype=torch.long, device=device)] * 2)
            head = torch.cat([head, sample_tokens(scores[m], generator=s.generator, **sampling).view(1)])
            # drafts drawn from the masks' own distributions, processed as the base's are (no penalty)
            blocks_q = token_distribution(masks, **sampling)
            proposals = torch.multinomial(blocks_q, 1, generator=draws)[:, 0]
        numbers = torch.cat([head, proposals, sure.long()]).tolist()
        head, proposals, sure = numbers[: len(head)], numbers[len(head) : -len(sure)], numbers[-len(sure) :]
        if o.temperature == 0:
            kept = 0
            while kept < m and drafts[kept] == head[kept]:
                kept += 1
            token = head[kept]
        else:
            kept = head[0]
            token = head[1] if kept < m else head[2]
        new = drafts[:kept] + [token]
        cache.trim(cached + 1 + kept)  # t and the kept drafts: their keys are the base's own
        if kept in after:  # the block of masks after the last kept draft drafts the next forward
            lo = after.index(kept) * k
            room = s.max_new_tokens - len(out) - len(new) - 1  # drafts past the last token allowed are never kept
            run = next((j for j in range(k) if not sure[lo + j]), k)
            run = max(0, min(room, run))
            drafts = proposals[lo : lo + run]
            q = None if o.temperature == 0 else blocks_q[lo : lo + run]
        else:
            drafts = []
        last = new[-1]
        cut = next((j for j, token in enumerate(new) if token in stops), None)
        reason = None
        if cut is not None:
            new, reason = new[:cut], "stop"
        if len(out) + len(new) >= s.max_new_tokens and reason is None:
            new, reason = new[: s.max_new_tokens - len(out)], "length"
        out = out + new
        penalty.add(new)
        if stop_check is not None and new:
            at = stop_check(row, out)
            if at is not None:
                out, reason = out[:at], "stop"
        yield StepEvent(block=step, step=step, forward_tokens=ids.shape[1], committed=len(new), edited=0,
                        stable={row: list(out)}, rows=[row])
        step += 1
        if reason is not None:
            yield FinishEvent(row, out, reason)
            return


@torch.inference_mode()
def draft_decode(model: Decoder, family: Family, prompts: list[list[int]], settings: DecodeSettings,
                 stop_check: Callable[[int, list[int]], int | None] | None = None) -> Iterator:
    """Yield the decode loop's events (StepEvent, FinishEvent) while a gated family drafts `prompts`; the settings'
    block size is the number of masks a block drafts with, draft_threshold the probability a draft needs to be
    proposed, draft_tree whether a block follows every draft (default: on CUDA)."""
    if not family.gated:
        raise InvalidArgumentError("model", family.model_type, "drafting needs a gated adapter (adapt --gated)")
    _check(model, family, prompts, settings, 2 * settings.block_size + 1)
    factor = ntk_factor(model, family, settings, max(len(p) for p in prompts) + settings.max_new_tokens
                        + 2 * settings.block_size + 1)
    tree = settings.options.draft_tree
    tree = model.device.type == "cuda" if tree is None else tree
    for row, prompt in enumerate(prompts):
        yield from _decode_row(model, family, row, prompt, settings, stop_check, factor, tree)
