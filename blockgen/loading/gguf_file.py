"""GGUF checkpoints (llama, qwen2, qwen3) read with the `gguf` package and converted to a safetensors directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from blockgen.errors import CheckpointNotFoundError, ConfigError, CorruptCheckpointError, UnsupportedArchitectureError

SUPPORTED = ("llama", "qwen2", "qwen3")

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _open(path: Path):
    import gguf

    if not path.is_file():
        raise CheckpointNotFoundError(path, "no such GGUF file")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise CorruptCheckpointError(path, f"cannot read GGUF ({exc})") from None


def _field(reader, path: Path, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ConfigError(path, key, "missing from the GGUF metadata")
        return default
    return field.contents()


def gguf_config(reader, path: Path) -> dict:
    """A Hugging Face style config.json dict from GGUF metadata."""
    arch = _field(reader, path, "general.architecture")
    if arch not in SUPPORTED:
        raise UnsupportedArchitectureError(path, "general.architecture", f"{arch!r} is not one of {SUPPORTED}")
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embed is None:
        raise ConfigError(path, "token_embd.weight", "the GGUF holds no token embedding")
    heads = int(_field(reader, path, f"{arch}.attention.head_count"))
    hidden = int(_field(reader, path, f"{arch}.embedding_length"))
    config = {
        "model_type": arch,
        "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]],
        "vocab_size": int(embed.shape[1]),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, path, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, path, f"{arch}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, path, f"{arch}.attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, path, f"{arch}.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(_field(reader, path, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, path, f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, path, f"{arch}.context_length")),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "torch_dtype": "float32",
    }
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        field = reader.fields.get(f"tokenizer.ggml.{name}_token_id")
        if field is not None:
            config[key] = int(field.contents())
    return config


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp stores LLaMA's q/k rows interleaved per rotary pair; restore the half-split order.
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(reader, path: Path, config: dict) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to float32 under the decoder's names."""
    from gguf.quants import dequantize

    tensors = {}
    for t in reader.tensors:
        parts = t.name.split(".")
        try:
            if parts[0] == "blk":
                name = f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
            else:
                name = f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
        except (KeyError, IndexError, ValueError):
            if t.name.startswith("rope_"):
                continue  # precomputed rope tables; blockgen computes its own
            raise CorruptCheckpointError(path, f"tensor {t.name!r} has no place in a {config['model_type']} model") from None
        array = dequantize(t.data, t.tensor_type).reshape(tuple(int(d) for d in reversed(t.shape)))
        if config["model_type"] == "llama" and parts[0] == "blk" and parts[2] in ("attn_q", "attn_k"):
            heads = config["num_attention_heads"] if parts[2] == "attn_q" else config["num_key_value_heads"]
            array = _unpermute(array, heads)
        tensors[name] = torch.from_numpy(np.array(array, dtype=np.float32, order="C", copy=True))
    return tensors


def convert_gguf(path: str | Path, out_dir: str | Path) -> Path:
    """Write `path` as a Hugging Face directory (config.json, model.safetensors, tokenizer) at out_dir, atomically."""
    from transformers import AutoTokenizer

    path, out_dir = Path(path).resolve(), Path(out_dir)
    reader = _open(path)
    config = gguf_config(reader, path)
    tensors = gguf_tensors(reader, path, config)
    del reader
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(tensors, work / "model.safetensors", metadata={"format": "pt", "source": path.name})
        (work / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        tokenizer.save_pretrained(work)
        try:
            os.replace(work, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():  # another process finished first: keep its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir
