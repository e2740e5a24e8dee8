"""Block-diffusion decoding: the decode loop, schedulers, and the text tiers over them."""

from blockgen.engine.decode import BlockEvent, DecodeSettings, FinishEvent, StepEvent, decode, resolve_cache
from blockgen.engine.generation import (
    GenerationChunk,
    GenerationConfig,
    GenerationResult,
    GenerationStats,
    collect,
    stream,
)
from blockgen.engine.infill import Slot, infill
from blockgen.engine.sampling import confidence_of, sample_tokens
from blockgen.engine.schedulers import (
    FactorScheduler,
    LowConfidenceScheduler,
    ThresholdScheduler,
    UnmaskingScheduler,
    make_scheduler,
)

__all__ = [
    "BlockEvent",
    "collect",
    "DecodeSettings",
    "FactorScheduler",
    "FinishEvent",
    "GenerationChunk",
    "GenerationConfig",
    "GenerationResult",
    "GenerationStats",
    "LowConfidenceScheduler",
    "Slot",
    "StepEvent",
    "ThresholdScheduler",
    "UnmaskingScheduler",
    "confidence_of",
    "decode",
    "infill",
    "make_scheduler",
    "resolve_cache",
    "sample_tokens",
    "stream",
]
