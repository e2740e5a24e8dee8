"""The network: one decoder for the LLaMA / Qwen2 / Qwen3 / LLaDA family, its cache, RoPE and family records."""

from blockgen.models.attention import Attention, AttentionKind, build_mask, structural_mask
from blockgen.models.cache import KVCache
from blockgen.models.config import ModelConfig, config_from_dict
from blockgen.models.decoder import Decoder
from blockgen.models.family import Family, family_from_config
from blockgen.models.rope import critical_dimension, ntk_factor_for

__all__ = [
    "Attention",
    "AttentionKind",
    "Decoder",
    "Family",
    "KVCache",
    "ModelConfig",
    "build_mask",
    "config_from_dict",
    "critical_dimension",
    "family_from_config",
    "ntk_factor_for",
    "structural_mask",
]
