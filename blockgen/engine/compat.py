"""blockgen's decoder behind the call convention of diffusers' LLaDA2Pipeline, so the ecosystem's reference loop
can run blockgen models (the conformance tests and the speed benchmark use it as the baseline)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from blockgen.models.attention import Attention
from blockgen.models.decoder import Decoder


class PipelineModel(torch.nn.Module):
    """`model(input_ids, attention_mask=, position_ids=).logits` over a blockgen Decoder.

    The mask token's logit is removed, as blockgen's engine does (a committed token is never the mask).
    """

    def __init__(self, decoder: Decoder, attention: Attention, mask_token_id: int):
        super().__init__()
        self.decoder, self.attention, self.mask_token_id = decoder, attention, mask_token_id

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.dtype

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        token_mask = None if attention_mask is None else attention_mask.bool()
        logits = self.decoder(input_ids, positions=position_ids, attention=self.attention, token_mask=token_mask)
        logits[..., self.mask_token_id] = float("-inf")
        return SimpleNamespace(logits=logits)
