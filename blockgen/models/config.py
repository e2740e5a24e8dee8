"""The network's shape, read from a Hugging Face config.json (or GGUF metadata turned into one)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockgen.errors import ConfigError, UnsupportedArchitectureError

# model_type -> architecture the weights follow. Diffusion checkpoints reuse an AR layout.
ARCHITECTURES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "dream": "qwen2",
    "fast_dllm_qwen": "qwen2",
    "qwen3": "qwen3",
    "sdar": "qwen3",
    "llada": "llada",
}


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # llama | qwen2 | qwen3 | llada
    model_type: str  # as written in config.json, lower-cased
    vocab_size: int  # rows of the embedding matrix
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int  # the trained context length
    tie_word_embeddings: bool
    qkv_bias: bool = False
    qk_norm: bool = False

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _need(raw: dict, path: Path, *names: str) -> Any:
    for name in names:
        if name in raw and raw[name] is not None:
            return raw[name]
    raise ConfigError(path, names[0], "missing (needed to build the model)")


def _rope_theta(raw: dict, path: Path) -> float:
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", None):
        field = "rope_parameters" if "rope_parameters" in raw else "rope_scaling"
        raise ConfigError(path, field, f"RoPE type {kind!r} is not supported (only plain RoPE, NTK is applied by blockgen)")
    theta = raw.get("rope_theta", params.get("rope_theta"))
    if theta is None:
        raise ConfigError(path, "rope_theta", "missing (needed to build the model)")
    return float(theta)


def config_from_dict(raw: dict, path: str | Path = "config.json") -> ModelConfig:
    """Parse a Hugging Face style config dict; unknown keys are ignored, missing ones raise ConfigError."""
    path = Path(path)
    model_type = str(_need(raw, path, "model_type")).lower()
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            path, "model_type", f"{model_type!r} is not supported; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    arch = ARCHITECTURES[model_type]
    if arch == "llada":
        return _llada_config(raw, path, model_type)
    if raw.get("use_sliding_window"):
        raise ConfigError(path, "use_sliding_window", "sliding-window attention is not supported")
    if raw.get("mlp_bias"):
        raise ConfigError(path, "mlp_bias", "MLP biases are not supported")
    if raw.get("hidden_act", "silu") != "silu":
        raise ConfigError(path, "hidden_act", f"{raw['hidden_act']!r} is not supported (only 'silu', SwiGLU)")
    hidden = int(_need(raw, path, "hidden_size"))
    heads = int(_need(raw, path, "num_attention_heads"))
    return ModelConfig(
        architecture=arch,
        model_type=model_type,
        vocab_size=int(_need(raw, path, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(_need(raw, path, "intermediate_size")),
        num_layers=int(_need(raw, path, "num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(raw.get("head_dim") or hidden // heads),
        rms_norm_eps=float(_need(raw, path, "rms_norm_eps")),
        rope_theta=_rope_theta(raw, path),
        max_position_embeddings=int(_need(raw, path, "max_position_embeddings")),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        qkv_bias=arch == "qwen2" or bool(raw.get("attention_bias", False)),
        qk_norm=arch == "qwen3",
    )


def _llada_config(raw: dict, path: Path, model_type: str) -> ModelConfig:
    if raw.get("layer_norm_type", "rms") != "rms":
        raise ConfigError(path, "layer_norm_type", f"{raw['layer_norm_type']!r} is not supported (only 'rms')")
    if raw.get("activation_type", "swiglu") not in ("swiglu", "silu"):
        raise ConfigError(path, "activation_type", f"{raw['activation_type']!r} is not supported")
    if raw.get("include_bias"):
        raise ConfigError(path, "include_bias", "biases on every linear layer are not supported")
    hidden = int(_need(raw, path, "d_model"))
    heads = int(_need(raw, path, "n_heads"))
    return ModelConfig(
        architecture="llada",
        model_type=model_type,
        vocab_size=int(_need(raw, path, "embedding_size", "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(_need(raw, path, "mlp_hidden_size")),
        num_layers=int(_need(raw, path, "n_layers")),
        num_heads=heads,
        num_kv_heads=int(raw.get("n_kv_heads") or heads),
        head_dim=hidden // heads,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        rope_theta=float(_need(raw, path, "rope_theta")),
        max_position_embeddings=int(_need(raw, path, "max_sequence_length")),
        tie_word_embeddings=bool(raw.get("weight_tying", False)),
        qkv_bias=bool(raw.get("include_qkv_bias", False)),
        qk_norm=False,
    )
