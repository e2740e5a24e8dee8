"""The drafting loop for gated adapters: the base writes every token, the adapter's masks draft the ones after it,
and a draft is kept only where the base writes that very token.

Each forward runs, for one row, the newest token the base wrote (not cached yet), the drafts of the last forward and
`block_size` mask tokens after them:

    [ t | d_1 ... d_m | M_1 ... M_k ]

t and the drafts attend causally and never to a mask, with the adapter's gate closed, so their outputs are the
base's own next-token predictions, at all those positions in one pass. The base's token after t is compared with
d_1, the one after d_1 with d_2, and so on: the drafts that agree are kept, and the base's token after the last kept
one is written too, so a forward writes 1 + (drafts kept) tokens and the text is the base's own. Greedy, it is the
base's argmax text token for token; sampling, each token is drawn from the base's distribution given the text before
it (processed as the AR loop processes it: penalty, temperature, top-k/p), so the text follows AR sampling's
distribution (not its random stream). The masks attend to everything before them and to each other, with the gate
open; when every draft was kept their predictions become the next forward's drafts (the leading run whose
probability reaches the threshold), otherwise the next forward starts without drafts. The kept tokens' keys and
values stay cached, the rest are dropped (`KVCache.trim`).

Rows decode one after another (each its own cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from blockgen.engine.decode import DecodeSettings, FinishEvent, StepEvent, _check, ntk_factor
from blockgen.engine.sampling import sample_tokens
from blockgen.errors import InvalidArgumentError
from blockgen.models.cache import KVCache
from blockgen.models.decoder import Decoder
from blockgen.models.family import Family


def _draft_mask(cached: int, base: int, masks: int, device) -> torch.Tensor:
    """(1, 1, n, cached + n) bool, n = base + masks: the base's positions causal and blind to the masks, the masks
    seeing everything."""
    n = base + masks
    mask = torch.ones(n, cached + n, dtype=torch.bool, device=device)
    new = torch.arange(n, device=device)
    mask[:base, cached:] = new[None, :] <= new[:base, None]
    return mask[None, None]


class _Penalty:
    """CTRL's repetition penalty over a row's context (or its generated tokens), per base position of a forward: the
    position after draft j also sees drafts 1..j."""

    def __init__(self, penalty: float, vocab: int, seen: list[int], device):
        self.penalty = penalty
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
        if penalty != 1.0 and seen:
            self.seen[torch.tensor(seen, device=device)] = True

    def add(self, tokens: list[int]) -> None:
        if self.penalty != 1.0 and tokens:
            self.seen[torch.tensor(tokens, device=self.seen.device)] = True

    def __call__(self, logits: torch.Tensor, drafts: list[int]) -> torch.Tensor:
        """logits (m + 1, V) at t and the m drafts."""
        if self.penalty == 1.0:
            return logits
        seen = self.seen[None].repeat(logits.shape[0], 1)
        for j, token in enumerate(drafts):
            seen[j + 1 :, token] = True
        penalized = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(seen, penalized, logits)


def _decode_row(model: Decoder, family: Family, row: int, prompt: list[int], s: DecodeSettings,
                stop_check: Callable[[int, list[int]], int | None] | None, factor: float | None) -> Iterator:
    o, k, mask_id = s.options, s.block_size, family.mask_token_id
    device, vocab = model.device, model.config.vocab_size
    cache = KVCache.for_model(model, 1, len(prompt) + s.max_new_tokens + k + 1)
    if len(prompt) > 1:
        model(torch.tensor([prompt[:-1]], device=device), cache=cache, logits_at=torch.tensor([0], device=device),
              ntk_factor=factor)
    penalty = _Penalty(o.repetition_penalty, vocab, [] if o.penalty_scope == "generated" else prompt, device)
    stops = set(s.stop_token_ids)
    last, drafts, out, step = prompt[-1], [], [], 0
    while True:
        m = len(drafts)
        ids = torch.tensor([[last, *drafts] + [mask_id] * k], device=device)
        cached = cache.length
        logits = model(ids, cache=cache, attn_mask=_draft_mask(cached, m + 1, k, device), lora_gate=m + 1,
                       ntk_factor=factor)[0].float()
        written = sample_tokens(penalty(logits[: m + 1], drafts), temperature=o.temperature, top_k=o.top_k,
                                top_p=o.top_p, generator=s.generator).tolist()
        kept = 0
        while kept < m and drafts[kept] == written[kept]:
            kept += 1
        new = drafts[:kept] + [written[kept]]
        cache.trim(cached + 1 + kept)  # t and the kept drafts: their keys are the base's own
        if kept == m:
            guess = logits[m + 1 :].softmax(-1).max(-1)
            sure = (guess.values >= o.threshold).tolist()
            room = s.max_new_tokens - len(out) - len(new) - 1  # drafts past the last token allowed are never kept
            run = next((j for j, ok in enumerate(sure) if not ok), len(sure))
            drafts = guess.indices[: max(0, min(run, room))].tolist()
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
    block size is the number of masks a forward drafts with, its threshold the probability a draft needs."""
    if not family.gated:
        raise InvalidArgumentError("model", family.model_type, "drafting needs a gated adapter (adapt --gated)")
    _check(model, family, prompts, settings, settings.block_size + 1)
    factor = ntk_factor(model, family, settings, max(len(p) for p in prompts) + settings.max_new_tokens
                        + settings.block_size + 1)
    for row, prompt in enumerate(prompts):
        yield from _decode_row(model, family, row, prompt, settings, stop_check, factor)
