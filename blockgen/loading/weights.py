"""Safetensors reading and the checked assembly of a Decoder from named tensors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from blockgen.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    TensorError,
    UnsafeCheckpointError,
)
from blockgen.models.config import ModelConfig
from blockgen.models.decoder import Decoder

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_NAME = "model.safetensors.index.json"
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")

# LLaDA-8B's names -> the decoder's (Hugging Face LLaMA) names.
_LLADA_LAYER = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ff_norm": "post_attention_layernorm",
}
_LLADA_TOP = {"wte": "model.embed_tokens", "ln_f": "model.norm", "ff_out": "lm_head"}
_LLADA_NAME = re.compile(r"^model\.transformer\.(?:blocks\.(\d+)\.)?(\w+)\.(weight|bias)$")


def refuse_pickle(path: Path) -> None:
    if path.suffix in PICKLE_SUFFIXES:
        raise UnsafeCheckpointError(path, "pickle-based checkpoints are refused (never unpickled); convert to safetensors")


def safetensors_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, through its index when sharded."""
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptCheckpointError(index, f"unreadable index ({exc})") from None
        files = [directory / name for name in names]
        for file in files:
            if not file.is_file():
                raise CheckpointNotFoundError(file, f"shard named in {INDEX_NAME} is missing")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        refuse_pickle(pickles[0])
    raise CheckpointNotFoundError(directory, "no *.safetensors weights in this directory")


def read_safetensors(files: list[Path], device: str = "cpu") -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(file, device=device))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CorruptCheckpointError(file, f"cannot read safetensors ({exc})") from None
    return tensors


def rename_llada(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    renamed = {}
    for name, tensor in tensors.items():
        match = _LLADA_NAME.match(name)
        layer, part, kind = match.groups() if match else (None, None, None)
        table = _LLADA_LAYER if layer is not None else _LLADA_TOP
        if part not in table:
            raise TensorError(path, name, "not a LLaDA tensor name")
        prefix = f"model.layers.{layer}." if layer is not None else ""
        renamed[f"{prefix}{table[part]}.{kind}"] = tensor
    return renamed


def build_decoder(
    cfg: ModelConfig,
    tensors: dict[str, torch.Tensor],
    path: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    ntk_factor: float = 1.0,
) -> Decoder:
    """A Decoder holding exactly these tensors: every expected name present with its shape, nothing else."""
    if cfg.architecture == "llada":
        tensors = rename_llada(tensors, path)
    with torch.device("meta"):
        model = Decoder(cfg, ntk_factor)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    state = {}
    for name, tensor in tensors.items():
        if _IGNORED.search(name) or (name == "lm_head.weight" and cfg.tie_word_embeddings):
            continue
        if name not in expected:
            raise TensorError(path, name, f"not part of a {cfg.architecture} model with this config")
        if tuple(tensor.shape) != expected[name]:
            raise TensorError(path, name, f"shape {tuple(tensor.shape)}, expected {expected[name]}")
        state[name] = tensor.to(device=device, dtype=dtype)
    for name in expected:
        if name not in state:
            raise TensorError(path, name, "missing from the checkpoint")
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval().requires_grad_(False)
