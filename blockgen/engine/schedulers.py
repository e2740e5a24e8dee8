"""Unmasking policies as schedulers with the diffusers interface.

Each scheduler is configured by its constructor (saved and loaded with `save_pretrained` / `from_pretrained`), has
`set_timesteps(num_inference_steps, device, block_length)` and a `step(model_output, timestep, sample, ...)` that
returns diffusers' `BlockRefinementSchedulerOutput`. diffusers' own `BlockRefinementScheduler` plugs into the engine
the same way. The step decides which masked positions of a block to commit (and, with editing, which committed ones
to replace); the engine decides which positions may change at all.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_block_refinement import BlockRefinementSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from blockgen.engine.sampling import CONFIDENCES, confidence_of, sample_tokens
from blockgen.errors import InvalidArgumentError


class UnmaskingScheduler(SchedulerMixin, ConfigMixin):
    """Shared machinery: sampling, confidence, editing. Subclasses choose how many masked positions to commit."""

    config_name = "scheduler_config.json"
    order = 1

    def _check_common(self, confidence: str, editing_threshold: float | None) -> None:
        if confidence not in CONFIDENCES:
            raise InvalidArgumentError("confidence", confidence, f"must be one of {CONFIDENCES}")
        if editing_threshold is not None and not 0.0 <= editing_threshold <= 1.0:
            raise InvalidArgumentError("editing_threshold", editing_threshold, "must be in [0, 1] or None")

    def set_timesteps(self, num_inference_steps: int, device=None, block_length: int | None = None) -> None:
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidArgumentError("num_inference_steps", num_inference_steps, "must be an int >= 1")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)

    def select(self, confidence: torch.Tensor, masked: torch.Tensor, step_index: int) -> torch.Tensor:
        """(B, L) bool: which masked positions to commit, given their confidence (-inf elsewhere)."""
        raise NotImplementedError

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.LongTensor,
        *,
        mask_token_id: int,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        prompt_mask: torch.BoolTensor | None = None,
        return_dict: bool = True,
        **_: object,
    ) -> BlockRefinementSchedulerOutput | tuple:
        """Commit some masked positions of `sample` (B, L) from `model_output` logits (B, L, V)."""
        step_index = int(timestep.item()) if isinstance(timestep, torch.Tensor) else int(timestep)
        tokens = sample_tokens(model_output, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        probs = confidence_of(model_output, tokens, "probability")
        kind = self.config.confidence
        confidence = probs if kind == "probability" else confidence_of(model_output, tokens, kind, generator)
        masked = sample == mask_token_id
        ranked = confidence.float().masked_fill(~masked, float("-inf"))
        transfer = self.select(ranked, masked, step_index) & masked
        edits = torch.zeros_like(transfer)
        if self.config.editing_threshold is not None:
            editable = ~masked if prompt_mask is None else ~masked & ~prompt_mask.expand_as(masked)
            edits = editable & (tokens != sample) & (probs > self.config.editing_threshold)
        prev = torch.where(transfer | edits, tokens, sample)
        if not return_dict:
            return prev, transfer, edits, tokens, probs, model_output
        return BlockRefinementSchedulerOutput(
            prev_sample=prev,
            transfer_index=transfer,
            editing_transfer_index=edits,
            sampled_tokens=tokens,
            sampled_probs=probs,
            pred_logits=model_output,
        )


def _top_n(confidence: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(B, L) bool marking the counts[b] highest entries of each row (ties broken by position)."""
    order = confidence.argsort(dim=-1, descending=True, stable=True)
    ranks = order.argsort(dim=-1)
    return ranks < counts[:, None]


class LowConfidenceScheduler(UnmaskingScheduler):
    """LLaDA's low-confidence remasking: a fixed quota per step, the block's masks spread evenly over the steps
    (earlier steps take the remainder), committed in order of confidence. confidence="random" is random order."""

    @register_to_config
    def __init__(self, confidence: str = "probability", editing_threshold: float | None = None):
        self._check_common(confidence, editing_threshold)
        self.set_timesteps(1)

    def select(self, confidence, masked, step_index):
        # With the quota always met, ceil(remaining / steps left) reproduces LLaDA's schedule n//S (+1 early).
        steps_left = max(1, self.num_inference_steps - step_index)
        remaining = masked.sum(-1)
        counts = torch.div(remaining + steps_left - 1, steps_left, rounding_mode="floor")
        return _top_n(confidence, counts)


class ThresholdScheduler(UnmaskingScheduler):
    """Fast-dLLM's threshold rule: commit every masked position whose confidence >= threshold, and always at least
    the most confident one (so each step makes progress)."""

    @register_to_config
    def __init__(self, threshold: float = 0.9, confidence: str = "probability", editing_threshold: float | None = None):
        if not 0.0 <= threshold <= 1.0:
            raise InvalidArgumentError("threshold", threshold, "must be in [0, 1]")
        self._check_common(confidence, editing_threshold)
        self.set_timesteps(1)

    def select(self, confidence, masked, step_index):
        top1 = _top_n(confidence, masked.any(-1).long())
        return (confidence >= self.config.threshold) | top1


class FactorScheduler(UnmaskingScheduler):
    """Fast-dLLM's factor rule: with confidences sorted c_1 >= c_2 >= ..., commit the longest run n such that
    c_i >= 1 - factor / (i + 1) for every i <= n, and at least one."""

    @register_to_config
    def __init__(self, factor: float = 1.0, confidence: str = "probability", editing_threshold: float | None = None):
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
            raise InvalidArgumentError("factor", factor, "must be a positive number")
        self._check_common(confidence, editing_threshold)
        self.set_timesteps(1)

    def select(self, confidence, masked, step_index):
        ordered = confidence.sort(dim=-1, descending=True).values
        i = torch.arange(1, ordered.shape[-1] + 1, device=ordered.device)
        passes = ordered >= 1.0 - self.config.factor / (i + 1)
        run = passes.long().cumprod(-1).sum(-1)  # length of the leading run that passes
        counts = torch.minimum(run.clamp(min=1), masked.sum(-1))
        return _top_n(confidence, counts)


SCHEDULERS = {
    "low_confidence": LowConfidenceScheduler,
    "threshold": ThresholdScheduler,
    "factor": FactorScheduler,
}


# The names a user picks (GenerationConfig.scheduler, the CLI): the three rules, and LLaDA's quota with Dream's
# confidences (random order, margin, entropy).
SCHEDULER_NAMES = ("threshold", "low_confidence", "factor", "random", "margin", "entropy")


def scheduler_by_name(name: str, *, threshold: float = 0.9, factor: float = 1.0,
                      editing_threshold: float | None = None) -> UnmaskingScheduler:
    """The scheduler a user option names, configured from the options that concern it."""
    if name in ("random", "margin", "entropy"):
        return make_scheduler("low_confidence", confidence=name, editing_threshold=editing_threshold)
    extra = {"threshold": {"threshold": threshold}, "factor": {"factor": factor}}.get(name, {})
    return make_scheduler(name, editing_threshold=editing_threshold, **extra)


def make_scheduler(name: str, **config) -> UnmaskingScheduler:
    """A scheduler by name: low_confidence | threshold | factor (random order: low_confidence, confidence='random';
    Dream's margin / entropy: confidence='margin' | 'entropy')."""
    if name not in SCHEDULERS:
        raise InvalidArgumentError("scheduler", name, f"must be one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name](**config)
