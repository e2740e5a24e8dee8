"""How a checkpoint diffuses: attention kind, logit shift, mask token, attention block and default commit block.

Read from config.json (model_type, mask_token_id, bd_size / block_size) and the tokenizer. A `"blockgen"` entry in
config.json overrides any of these (adapted checkpoints carry one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockgen.errors import ConfigError
from blockgen.models.attention import Attention, AttentionKind

# model_type -> (attention, logit_shift, default block size, mask token strings to look for in the vocabulary)
_KINDS: dict[str, tuple[AttentionKind, bool, int, tuple[str, ...]]] = {
    "llama": (AttentionKind.CAUSAL, True, 1, ()),
    "mistral": (AttentionKind.CAUSAL, True, 1, ()),
    "qwen2": (AttentionKind.CAUSAL, True, 1, ()),
    "qwen3": (AttentionKind.CAUSAL, True, 1, ()),
    "dream": (AttentionKind.BIDIRECTIONAL, True, 32, ("<|mask|>",)),
    "fast_dllm_qwen": (AttentionKind.BLOCK_CAUSAL, True, 32, ("|<MASK>|",)),
    "sdar": (AttentionKind.BLOCK_CAUSAL, False, 4, ("<|MASK|>",)),
    "llada": (AttentionKind.BIDIRECTIONAL, False, 32, ("<|mdm_mask|>",)),
}

# model_type -> the commit block its published decoding uses inside the attention block (Fast-dLLM v2 attends in
# blocks of bd_size=32 and commits sub-blocks of 8); others commit whole attention blocks.
_DECODE_BLOCK: dict[str, int] = {"fast_dllm_qwen": 8}

# model_type -> the context length the family's published checkpoints were trained at, where their config's
# max_position_embeddings says more (inherited from the base model's RoPE range). Others: max_position_embeddings.
_TRAINED_LENGTH: dict[str, int] = {
    "dream": 2048,  # Dream-v0 (README: trained at 2048 tokens; config.json says 131072)
}


@dataclass(frozen=True)
class Family:
    """The diffusion record of one checkpoint.

    logit_shift: token i is predicted from position i-1's logits (Dream, Fast-dLLM v2, AR models) instead of from
    position i (LLaDA, SDAR, LLaDA2, BD3-LM).
    gated: a causal base with a gated drafting adapter (blockgen.models.gate): the base writes every token, the
    adapter's mask positions draft the ones after it, and a draft is kept where the base would have written it
    (blockgen.engine.drafting).
    """

    model_type: str
    attention: AttentionKind
    logit_shift: bool
    mask_token_id: int | None
    block_size: int
    trained_length: int | None = None  # the context it was trained at (None: config's max_position_embeddings)
    decode_block: int | None = None  # the published commit block (None: block_size)
    gated: bool = False

    @property
    def default_block(self) -> int:
        """The commit block a generation uses unless it names one: the published one, else the attention block."""
        return self.decode_block or self.block_size

    @property
    def exact_cache(self) -> bool:
        """Whether cached keys of finished blocks equal a full recompute (causal and block-causal attention)."""
        return self.attention is not AttentionKind.BIDIRECTIONAL

    def attention_for(self, block_size: int | None = None) -> Attention:
        if self.attention is AttentionKind.BLOCK_CAUSAL:
            return Attention.block_causal(block_size or self.block_size)
        return Attention(self.attention)


def _mask_token_id(raw: dict, tokenizer, names: tuple[str, ...]) -> int | None:
    if raw.get("mask_token_id") is not None:
        return int(raw["mask_token_id"])
    if tokenizer is None:
        return None
    if getattr(tokenizer, "mask_token_id", None) is not None:
        return int(tokenizer.mask_token_id)
    vocab = tokenizer.get_vocab()
    for name in names:
        if name in vocab:
            return int(vocab[name])
    return None


def family_from_config(raw: dict, tokenizer=None, path: str | Path = "config.json") -> Family:
    model_type = str(raw.get("model_type", "")).lower()
    if model_type not in _KINDS:
        raise ConfigError(path, "model_type", f"{model_type!r} has no diffusion record")
    attention, shift, block, mask_names = _KINDS[model_type]
    block = int(raw.get("bd_size") or raw.get("block_size") or block)
    mask_id = _mask_token_id(raw, tokenizer, mask_names)
    override = raw.get("blockgen")
    override = {} if override is None else override
    if not isinstance(override, dict):
        raise ConfigError(path, "blockgen", "must be an object")
    try:
        attention = AttentionKind(override.get("attention", attention))
    except ValueError:
        raise ConfigError(path, "blockgen.attention", f"{override['attention']!r} is not one of causal, "
                          "block_causal, bidirectional") from None
    shift = bool(override.get("logit_shift", shift))
    mask_id = override.get("mask_token_id", mask_id)
    block = override.get("block_size", block)
    if not isinstance(block, int) or block < 1:
        raise ConfigError(path, "block_size", f"{block!r} is not a positive int")
    if attention is not AttentionKind.CAUSAL and mask_id is None:
        raise ConfigError(path, "mask_token_id", f"a {model_type} checkpoint needs a mask token; none in config or tokenizer")
    trained = _optional_size(override, "trained_length", _TRAINED_LENGTH.get(model_type), path)
    decode = _optional_size(override, "decode_block", _DECODE_BLOCK.get(model_type), path)
    gated = override.get("gated", False)
    if not isinstance(gated, bool):
        raise ConfigError(path, "blockgen.gated", f"{gated!r} is not true or false")
    if gated and (attention is not AttentionKind.CAUSAL or not shift or mask_id is None):
        raise ConfigError(path, "blockgen.gated", "a gated adapter drafts for a causal, shifted base with a mask token")
    return Family(model_type, attention, shift, None if mask_id is None else int(mask_id), block, trained,
                  decode, gated)


def _optional_size(override: dict, name: str, default: int | None, path) -> int | None:
    """The "blockgen" entry's `name` (else the family's default): None or a positive int."""
    value = override.get(name, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(path, f"blockgen.{name}", f"{value!r} is not a positive int")
    return value
