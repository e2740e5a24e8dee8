"""Token-by-token greedy decoding with a KV cache: the AR baseline every block-diffusion mode is compared with."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from blockgen.errors import InvalidArgumentError
from blockgen.models.attention import Attention
from blockgen.models.cache import KVCache
from blockgen.models.decoder import Decoder


@torch.inference_mode()
def greedy_tokens(
    model: Decoder, prompt_ids: list[int], max_new_tokens: int, stop_token_ids: tuple[int, ...] = ()
) -> Iterator[int]:
    """Yield greedy next tokens one at a time (causal attention, logit shift), stopping after a stop token."""
    if not prompt_ids:
        raise InvalidArgumentError("prompt", prompt_ids, "must hold at least one token")
    if max_new_tokens < 1:
        raise InvalidArgumentError("max_new_tokens", max_new_tokens, "must be >= 1")
    capacity = len(prompt_ids) + max_new_tokens
    if capacity > model.config.max_position_embeddings and model.ntk_factor == 1.0:
        raise InvalidArgumentError(
            "max_new_tokens",
            max_new_tokens,
            f"prompt ({len(prompt_ids)}) + new tokens exceed the trained context "
            f"{model.config.max_position_embeddings}; set an NTK factor to go beyond it",
        )
    cache = KVCache.for_model(model, batch_size=1, capacity=capacity)
    ids = torch.tensor([prompt_ids], device=model.device)
    causal = Attention.causal()
    for _ in range(max_new_tokens):
        logits = model(ids, attention=causal, cache=cache)
        token = int(logits[0, -1].argmax())
        yield token
        if token in stop_token_ids:
            return
        ids = torch.tensor([[token]], device=model.device)
