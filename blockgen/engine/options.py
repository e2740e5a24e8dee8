"""GenerationConfig: every option of one generation, declared once.

The CLI builds its flags from these fields, the writer nests them, DecodeSettings carries them into the decode loop,
and infill takes them as keyword options. Defaults that depend on the checkpoint (the block size) are resolved here.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import ConfigDict, Field

from blockgen.engine.schedulers import SCHEDULER_NAMES, scheduler_by_name
from blockgen.options import Options

CACHE_MODES = ("auto", "exact", "prefix", "dual", "none")


class GenerationConfig(Options):
    """Options of one generation. None means: the checkpoint family's default (block size) or one step per token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(128, ge=1, le=1_000_000)
    block_size: int | None = Field(None, ge=1, le=4096, description="tokens per block (default: the checkpoint "
                                   "family's)")
    steps: int | None = Field(None, ge=1, le=4096, description="refinement steps per block (default: the block size)")
    scheduler: Literal[SCHEDULER_NAMES] = Field("threshold", description="which masked positions a step commits")
    threshold: float = Field(0.9, ge=0.0, le=1.0, description="confidence to commit at (threshold scheduler)")
    factor: float = Field(1.0, gt=0.0, description="factor of the factor scheduler")
    editing_threshold: float | None = Field(None, ge=0.0, le=1.0, description="replace committed tokens predicted "
                                            "above this")
    draft_threshold: float | None = Field(None, ge=0.0, le=1.0, description="gated drafting adapters: the "
                                         "probability a draft needs to be proposed (default: 0.1; proposals are "
                                         "checked against the base, so a low one costs rows, not quality)")
    draft_tree: bool | None = Field(None, description="gated drafting adapters: masks after every draft, not only "
                                    "after the last, so a forward that rejects a draft still leaves drafts for the "
                                    "next (more rows a forward; default: on CUDA, where rows cost little)")
    temperature: float = Field(0.0, ge=0.0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="CTRL's penalty on tokens already in the row")
    penalty_scope: Literal["context", "generated"] = Field("context", description="tokens the penalty sees: the "
                                                           "prompt and the generated text, or only the generated")
    dry_multiplier: float = Field(0.0, ge=0.0, le=10.0, description="DRY: a token that would make the text repeat "
                                  "an earlier run of dry_allowed_length or more tokens loses multiplier * base ** "
                                  "(length - dry_allowed_length) of its logit (0: off); it sees the tokens "
                                  "penalty_scope says")
    dry_base: float = Field(1.75, ge=1.0, le=4.0, description="DRY: how fast the penalty grows with the repeat")
    dry_allowed_length: int = Field(2, ge=1, le=64, description="DRY: the longest repeat left unpenalized")
    dry_breakers: tuple[Annotated[str, Field(min_length=1, max_length=40)], ...] = Field(
        ("\n", ":", '"', "*"), max_length=20, description="DRY: a token holding any of these ends a repeat and is "
        "never penalized (so lists and dialogue keep form)")
    seed: int | None = None
    cache: Literal[CACHE_MODES] = Field("auto", description="KV cache mode")
    stop: tuple[str, ...] = Field((), description="stop strings")
    ntk_factor: float | Literal["auto"] | None = Field(None, description="RoPE NTK factor, or 'auto' for the "
                                                       "extrapolation law")

    def block_for(self, family) -> int:
        """The commit block this generation decodes with: the option, else the checkpoint family's published one."""
        return self.block_size or family.default_block

    def decode_settings(self, family, device, stop_token_ids: tuple[int, ...] = (), tokenizer=None):
        """The decode loop's settings: commit block and steps resolved, stop ids and the seeded generator attached
        (the decode loop adds the checkpoint's attention block); with DRY on, its breakers as token ids (from the
        tokenizer)."""
        from blockgen.engine.decode import DecodeSettings

        block = self.block_for(family)
        generator = None if self.seed is None else torch.Generator(device=device).manual_seed(self.seed)
        return DecodeSettings(**(self.model_dump() | {"block_size": block, "steps": self.steps or block}),
                              stop_token_ids=stop_token_ids, generator=generator,
                              dry_breaker_ids=self.dry_breaker_ids(tokenizer))

    def dry_breaker_ids(self, tokenizer) -> frozenset[int]:
        """DRY's breakers as the tokenizer's token ids (none when DRY is off or there is no tokenizer)."""
        from blockgen.engine.sampling import breaker_ids

        if not self.dry_multiplier or tokenizer is None:
            return frozenset()
        return breaker_ids(tokenizer, self.dry_breakers)

    def make_scheduler(self):
        return scheduler_by_name(self.scheduler, threshold=self.threshold, factor=self.factor,
                                 editing_threshold=self.editing_threshold)
