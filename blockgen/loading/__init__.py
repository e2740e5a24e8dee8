"""Checkpoint loaders: local Hugging Face directories (safetensors, sharded or not) and GGUF files. Beside them:
adapter directories (`blockgen.loading.adapter`) and the sentence embedder (`blockgen.loading.embedder`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from blockgen.errors import CheckpointNotFoundError, CorruptCheckpointError
from blockgen.loading.conversion_cache import cache_home, converted_dir, default_gguf_path
from blockgen.loading.gguf_file import convert_gguf
from blockgen.loading.weights import build_decoder, read_safetensors, refuse_pickle, safetensors_files
from blockgen.models.config import config_from_dict
from blockgen.models.decoder import Decoder


def checkpoint_dir(name_or_path: str | Path) -> Path:
    """The safetensors directory for a name or path: "default" (or "default-ar", the same base without any packaged
    adapter), a directory, or a .gguf file (converted once)."""
    if str(name_or_path) in ("default", "default-ar"):
        return converted_dir(default_gguf_path())
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise CheckpointNotFoundError(path, "no such file or directory (blockgen loads local checkpoints only)")
    refuse_pickle(path)
    if path.is_file() and path.suffix == ".gguf":
        return converted_dir(path)
    if not path.is_dir():
        raise CheckpointNotFoundError(path, "expected a checkpoint directory or a .gguf file")
    return path


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointNotFoundError(path, "missing: a checkpoint directory needs its config.json")
    return read_json_object(path)


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object; CorruptCheckpointError naming the file otherwise."""
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise CorruptCheckpointError(path, f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise CorruptCheckpointError(path, "not a JSON object")
    return raw


def load_decoder(
    directory: Path, *, device: torch.device, dtype: torch.dtype, ntk_factor: float = 1.0
) -> tuple[Decoder, dict]:
    """The decoder of a checkpoint directory and its raw config.json dict."""
    raw = read_config(directory)
    cfg = config_from_dict(raw, directory / "config.json")
    files = safetensors_files(directory)
    tensors = read_safetensors(files, device=str(device))
    return build_decoder(cfg, tensors, directory, device=device, dtype=dtype, ntk_factor=ntk_factor), raw


__all__ = [
    "build_decoder",
    "cache_home",
    "checkpoint_dir",
    "convert_gguf",
    "converted_dir",
    "default_gguf_path",
    "load_decoder",
    "read_config",
    "read_json_object",
]
