"""Block-diffusion decoding: the decode loop, schedulers, and the text tiers over them."""

from blockgen.engine.decode import BlockEvent, DecodeSettings, FinishEvent, StepEvent, decode, fill, resolve_cache
from blockgen.engine.generation import GenerationChunk, GenerationResult, GenerationStats, collect, stream
from blockgen.engine.options import CACHE_MODES, GenerationConfig
from blockgen.engine.infill import Slot, infill
from blockgen.engine.sampling import confidence_of, sample_tokens
from blockgen.engine.schedulers import (
    FactorScheduler,
    LowConfidenceScheduler,
    ThresholdScheduler,
    UnmaskingScheduler,
    make_scheduler,
    scheduler_by_name,
)
from blockgen.engine.schedulers import SCHEDULER_NAMES

__all__ = [
    "CACHE_MODES",
    "SCHEDULER_NAMES",
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
    "fill",
    "infill",
    "make_scheduler",
    "resolve_cache",
    "scheduler_by_name",
    "sample_tokens",
    "stream",
]
