"""`adapt`: turn a causal LM into a block-diffusion model (the LLaDA2.0 / Fast-dLLM v2 recipe).

One run writes into its output directory:
  the loadable model: an adapter directory (LoRA) or a full checkpoint directory (full fine-tuning), refreshed at
  every checkpoint, so `blockgen.load(out)` works as soon as the first checkpoint is written;
  training/run.json      the run's settings (a resumed run must match them; only `steps` may grow)
  training/data.jsonl    the training examples (written once, so a resumed run sees the same data)
  training/checkpoint/   trainable weights, AdamW state (safetensors) and state.json (step, tokens, losses)

Every random draw of step s comes from a generator seeded with (seed, s), and the batch of step s is a function of s,
so a run that stops and resumes trains exactly as one that did not stop.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, field_validator
from safetensors.torch import load_file, save_file
from torch import nn

from blockgen.adapt.card import write_card
from blockgen.adapt.data import (Example, collate, collate_packed, distill, examples_from_files, load_examples, pack,
                                 prompt_set, save_examples)
from blockgen.adapt.layout import TrainingBatch, build_batch, gated_batch
from blockgen.errors import InvalidArgumentError
from blockgen.loading import adapter as adapter_io
from blockgen.models.gate import gate_peft_layers
from blockgen.options import Options

_MASK_NAMES = ("<|mask|>", "<|MASK|>", "|<MASK>|", "<|mdm_mask|>", "<mask>", "[MASK]")


class AdaptConfig(Options):
    """The settings of one adaptation run (what makes it this run: a resume must match them, except `steps`)."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field("default", description="'default', a checkpoint directory or a .gguf file (a causal LM)")
    data: list[str] = Field(default_factory=list, description="UTF-8 text files, or .jsonl datasets of "
                           "prompt/completion token ids (as a run writes them), to train on")
    distill: int = Field(0, ge=0, description="prompts of the built-in set the base model answers (self-distillation)")
    distill_tokens: int = Field(192, ge=8, le=4096)
    distill_batch: int = Field(16, ge=1, le=1024)
    distill_temperature: float = Field(0.7, ge=0.0)
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1)
    seq_len: int = Field(256, ge=8, le=65536)
    pack: bool = Field(False, description="pack several examples into each seq_len row (each in its own attention "
                       "segment, starting at a multiple of the largest block size): every row full, one shape a step")
    lr: float = Field(2e-4, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(20, ge=0)
    decay_fraction: float = Field(0.1, ge=0.0, le=1.0, description="last fraction of steps: lr decays linearly to 0")
    grad_clip: float = Field(1.0, gt=0.0)
    lora_rank: int | None = Field(16, ge=1, le=1024, description="None: full fine-tuning")
    lora_alpha: float | None = Field(None, gt=0.0, description="default: twice the rank")
    block_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], description="curriculum; the last is the target")
    curriculum_fraction: float = Field(0.3, ge=0.0, lt=1.0, description="steps spent on the curriculum's warm-up sizes")
    logit_shift: bool = Field(True, description="keep the AR shift: token i predicted at position i-1")
    mask_token: str | None = Field(None, description="token text to dedicate as the mask (default: found or picked)")
    mask_noise: float = Field(0.1, ge=0.0, description="Gaussian noise on the mask embedding at step 0 (x rows' std)")
    mask_noise_fraction: float = Field(0.1, ge=0.0, le=1.0, description="noise decays to 0 over this fraction")
    suffix_share: float = Field(0.0, ge=0.0, le=1.0, description="share of blocks masked as a suffix from a random "
                                "cut (the decode loop's pattern: a block's left part committed, the rest masked) "
                                "instead of at a random noise level")
    certainty: float = Field(0.0, ge=0.0, description="weight of the entropy of the masked positions the model "
                             "already predicts right (certainty forcing, after dParallel): confident where it is "
                             "right, so a confidence threshold commits more tokens a forward")
    gated: bool = Field(False, description="a drafting adapter: LoRA applied at mask positions only, the base's "
                        "own causal pass everywhere else, each mask trained to draft the token after the base's next "
                        "one (blockgen.engine.drafting decodes with it; the base's text is kept exactly)")
    adapter_dtype: Literal["float32", "bfloat16"] = Field("float32", description="LoRA weights as saved (bfloat16 "
                                                                    "halves the adapter's size)")
    init_from: str | None = Field(None, description="an adapter directory (LoRA of the same rank and mask token) "
                                  "whose weights and mask embedding start this run, e.g. to go on training it")
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1)
    device: str = "auto"
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the frozen base weights' dtype: auto = bfloat16 for a LoRA run on CUDA (the step runs "
        "under bf16 autocast there anyway; LoRA weights, the mask embedding and the optimizer stay float32), else "
        "float32")

    @field_validator("block_sizes")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if not sizes or any(s < 1 for s in sizes) or sizes != sorted(sizes):
            raise ValueError(f"{sizes} must be a non-empty increasing list of block sizes >= 1")
        return sizes

    @classmethod
    def build(cls, **options) -> "AdaptConfig":
        config = super().build(**options)
        if not config.data and not config.distill:
            raise InvalidArgumentError("data", config.data, "give text files (data) or a number of prompts (distill)")
        if config.gated and (config.lora_rank is None or not config.logit_shift):
            raise InvalidArgumentError("gated", True, "a gated adapter is a LoRA (lora_rank) over a shifted base "
                                       "(logit_shift)")
        if config.gated and (config.suffix_share or config.certainty):
            raise InvalidArgumentError("gated", True, "the gated layout masks every answer token; suffix_share and "
                                       "certainty belong to the block-causal one")
        if config.pack and config.seq_len % math.lcm(*config.block_sizes):
            raise InvalidArgumentError("seq_len", config.seq_len, "packing needs a multiple of "
                                       f"{math.lcm(*config.block_sizes)} (the block sizes' least common multiple)")
        return config

    @property
    def target_block_size(self) -> int:
        return self.block_sizes[-1]

    def block_size_at(self, step: int) -> int:
        """The curriculum: the warm-up sizes share the first curriculum_fraction of the steps, then the target."""
        warm = self.block_sizes[:-1]
        if not warm:
            return self.target_block_size
        phase = int(step / max(1, self.steps) / self.curriculum_fraction * len(warm)) if self.curriculum_fraction else len(warm)
        return warm[phase] if phase < len(warm) else self.target_block_size

    def lr_at(self, step: int) -> float:
        """Warmup-stable-decay: linear warm-up, constant, then a linear decay over the last decay_fraction."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        decay_from = self.steps * (1 - self.decay_fraction)
        if step >= decay_from and self.decay_fraction > 0:
            return self.lr * max(0.0, (self.steps - step) / (self.steps - decay_from))
        return self.lr

    def mask_noise_at(self, step: int) -> float:
        span = self.mask_noise_fraction * self.steps
        return self.mask_noise * max(0.0, 1 - step / span) if span > 0 else 0.0


@dataclass
class AdaptProgress:
    phase: str  # "distill" | "train"
    done: int
    total: int
    loss: float | None = None
    tokens_per_second: float | None = None
    block_size: int | None = None
    lr: float | None = None


@dataclass
class AdaptResult:
    out: Path
    step: int
    steps: int
    tokens_seen: int
    loss: float | None
    finished: bool
    seconds: float


class Trainee(nn.Module):
    """The decoder plus a trainable mask-token embedding; forward returns the masked-token cross-entropy, plus
    `certainty` times the mean entropy of the masked positions whose most likely token is the right one (their share
    of the targets counted; the cross-entropy alone is kept in `cross_entropy` for the log)."""

    def __init__(self, decoder: nn.Module, mask_token_id: int, certainty: float = 0.0):
        super().__init__()
        self.decoder = decoder
        self.mask_token_id = mask_token_id
        self.certainty = certainty
        self.cross_entropy: torch.Tensor | None = None
        self.mask_embedding = nn.Parameter(decoder.model.embed_tokens.weight[mask_token_id].detach().clone().float())

    def forward(self, batch: TrainingBatch, noise: torch.Tensor | None = None) -> torch.Tensor:
        """noise: (number of mask tokens in input_ids, H), added to the mask embedding at each of them in order."""
        embed = self.decoder.model.embed_tokens(batch.input_ids)
        is_mask = (batch.input_ids == self.mask_token_id)[..., None]
        row = self.mask_embedding.to(embed.dtype)
        if noise is None:
            embed = torch.where(is_mask, row, embed)
        else:
            embed = embed.masked_scatter(is_mask, row + noise.to(embed.dtype))
        hidden = self.decoder.hidden_states(batch.input_ids, positions=batch.positions, attn_mask=batch.attn_mask,
                                            inputs_embeds=embed, lora_gate=batch.gate)
        picked = hidden[batch.target_rows, batch.target_cols]
        logits = self.decoder.logits(picked).float()
        count = max(1, batch.tokens)
        loss = F.cross_entropy(logits, batch.targets, reduction="sum") / count
        self.cross_entropy = loss.detach()
        if self.certainty > 0:
            right = logits.detach().argmax(-1) == batch.targets
            logp = logits[right].log_softmax(-1)
            entropy = -(logp.exp() * logp).sum()
            loss = loss + self.certainty * entropy / count
        return loss


def pick_mask_token(tokenizer, requested: str | None) -> tuple[str, int]:
    """The token dedicated to masking: the requested one, the tokenizer's mask token, a known mask string, or the last
    added special token that is not EOS/BOS/PAD and that the chat template does not use."""
    vocab = tokenizer.get_vocab()
    if requested is not None:
        if requested not in vocab:
            raise InvalidArgumentError("mask_token", requested, "not a token of the base model's vocabulary")
        return requested, vocab[requested]
    if getattr(tokenizer, "mask_token", None):
        return tokenizer.mask_token, vocab[tokenizer.mask_token]
    for name in _MASK_NAMES:
        if name in vocab:
            return name, vocab[name]
    reserved = {tokenizer.eos_token, tokenizer.bos_token, tokenizer.pad_token, tokenizer.unk_token}
    template = getattr(tokenizer, "chat_template", None) or ""
    added = sorted(tokenizer.added_tokens_decoder.items(), reverse=True)
    for token_id, token in added:
        if token.special and token.content not in reserved and token.content not in template:
            return token.content, token_id
    raise InvalidArgumentError("mask_token", None, "the base vocabulary has no spare special token; name one")


def _examples_for_step(examples: list[Example], step: int, batch_size: int, seed: int) -> list[Example]:
    """The batch of step `step`: consecutive slots of per-epoch permutations (a pure function of step)."""
    n = len(examples)
    orders: dict[int, torch.Tensor] = {}  # one permutation per epoch the step touches
    picked = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, slot = divmod(k, n)
        if epoch not in orders:
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        picked.append(examples[int(orders[epoch][slot])])
    return picked


class _PackedRows:
    """The packed rows of each epoch (pack() over that epoch's permutation), and the rows of a step: consecutive
    rows of the epochs in turn, so a step's batch is a pure function of the step, as unpacked."""

    def __init__(self, examples: list[Example], seq_len: int, align: int, seed: int):
        self.examples, self.seq_len, self.align, self.seed = examples, seq_len, align, seed
        self.epochs: list[list[list[int]]] = []

    def _epoch(self, epoch: int) -> list[list[int]]:
        while len(self.epochs) <= epoch:
            n = len(self.examples)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + len(self.epochs)))
            self.epochs.append(pack(self.examples, order.tolist(), self.seq_len, self.align))
        return self.epochs[epoch]

    def for_step(self, step: int, batch_size: int) -> list[list[Example]]:
        picked, epoch, k = [], 0, step * batch_size
        while len(picked) < batch_size:
            rows = self._epoch(epoch)
            if k >= len(rows):
                k -= len(rows)
                epoch += 1
                continue
            take = rows[k : k + batch_size - len(picked)]
            picked += [[self.examples[i] for i in row] for row in take]
            k = 0
            epoch += 1
        return picked


def _step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


# ---- checkpoints: safetensors for tensors, JSON for the rest; written beside, then swapped in


def _save_checkpoint(directory: Path, trainee: Trainee, optimizer: torch.optim.Optimizer, state: dict) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().contiguous().cpu() for n, p in trainee.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "trainable.safetensors"))
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    record = dict(state, param_groups=opt["param_groups"], optimizer_scalars=scalars,
                  trainable=sorted(trainable))
    (tmp / "state.json").write_text(json.dumps(record, indent=1))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.replace(old)
    tmp.replace(directory)
    if old.exists():
        shutil.rmtree(old)


def _load_checkpoint(directory: Path, trainee: Trainee, optimizer: torch.optim.Optimizer) -> dict:
    from blockgen.errors import CorruptCheckpointError

    try:
        state = json.loads((directory / "state.json").read_text())
        trainable = load_file(str(directory / "trainable.safetensors"))
        opt_tensors = load_file(str(directory / "optimizer.safetensors"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(directory, f"cannot resume from this checkpoint ({exc})") from None
    params = dict(trainee.named_parameters())
    for name, tensor in trainable.items():
        if name not in params or params[name].shape != tensor.shape:
            raise CorruptCheckpointError(directory, f"tensor {name} does not fit this run's model")
        with torch.no_grad():
            params[name].copy_(tensor)
    entries: dict[int, dict] = {}
    for key, value in list(opt_tensors.items()) + list(state["optimizer_scalars"].items()):
        index, _, field = key.partition(".")
        entries.setdefault(int(index), {})[field] = value
    optimizer.load_state_dict({"state": entries, "param_groups": state["param_groups"]})
    return state


class _Run:
    """Paths and settings of one run directory."""

    def __init__(self, out: Path):
        self.out = out
        self.training = out / "training"
        self.settings = self.training / "run.json"
        self.data = self.training / "data.jsonl"
        self.checkpoint = self.training / "checkpoint"

    def check_settings(self, config: AdaptConfig, resume: bool) -> None:
        if not self.settings.is_file():
            if self.out.exists() and any(self.out.iterdir()):
                raise InvalidArgumentError("out", str(self.out), "exists and is not an adaptation run; pick a new dir")
            return
        if not resume:
            raise InvalidArgumentError("out", str(self.out), "holds a run already; pass resume=True (--resume) to "
                                       "continue it or pick a new directory")
        current = config.model_dump()
        defaults = AdaptConfig.model_construct().model_dump()  # settings added since the run was written
        stored = {**{k: v for k, v in defaults.items() if k in current}, **json.loads(self.settings.read_text())}
        changed = sorted(k for k in set(stored) | set(current) if k != "steps" and stored.get(k) != current.get(k))
        if changed:
            raise InvalidArgumentError(changed[0], current.get(changed[0]),
                                       f"differs from the run being resumed ({stored.get(changed[0])!r})")

    def write_settings(self, config: AdaptConfig) -> None:
        self.training.mkdir(parents=True, exist_ok=True)
        self.settings.write_text(json.dumps(config.model_dump(), indent=2))


def _base_name(base: str) -> str:
    """What the run loads and the adapter records as its base: the plain AR default, or the absolute path."""
    return "default-ar" if base == "default" else str(Path(base).expanduser().resolve())


def _recent_loss(losses: list[float]) -> float | None:
    recent = losses[-20:]
    return sum(recent) / len(recent) if recent else None


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({torch.cuda.device_count()} visible), torch {torch.__version__}"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _dataset(run: _Run, config: AdaptConfig, lm, on_progress) -> list[Example]:
    if run.data.is_file():
        return load_examples(run.data, lm.config.vocab_size)
    examples: list[Example] = []
    if config.data:
        examples += examples_from_files(lm.tokenizer, config.data, config.seq_len, lm.config.vocab_size)
    if config.distill:
        def report(done, total):
            if on_progress:
                on_progress(AdaptProgress("distill", done, total))

        examples += distill(lm, prompt_set(config.distill, config.seed), max_new_tokens=config.distill_tokens,
                            batch_size=config.distill_batch, temperature=config.distill_temperature,
                            seed=config.seed, on_batch=report)
    if not examples:
        raise InvalidArgumentError("data", config.data, "gave no training examples")
    save_examples(examples, run.data)
    return examples


def _export(run: _Run, config: AdaptConfig, trainee: Trainee, lm, mask: tuple[str, int], record: dict) -> None:
    """Write the loadable model: the adapter directory (LoRA) or a full checkpoint (full fine-tuning)."""
    family = {"attention": "causal" if config.gated else "block_causal", "logit_shift": config.logit_shift,
              "block_size": config.target_block_size, "mask_token_id": mask[1]}
    if config.gated:
        family["gated"] = True
    mask_row = trainee.mask_embedding.detach().float().cpu()
    write_card(run.out, config.base, family, record)
    if config.lora_rank is not None:
        dtype = getattr(torch, config.adapter_dtype)
        tensors = {name: t.to(dtype) for name, t in adapter_io.lora_state(trainee.decoder).items()}
        tensors[adapter_io.MASK_EMBEDDING] = mask_row
        adapter_io.save_adapter(run.out, {
            "base": _base_name(config.base),
            "lora_rank": config.lora_rank,
            "lora_alpha": config.lora_alpha or 2 * config.lora_rank,
            "targets": list(adapter_io.LORA_TARGETS),
            "mask_token": mask[0],
            "blockgen": family,
            "training": record,
        }, tensors)
        return
    from blockgen.loading import read_config

    state = {k: v.detach().float().cpu().contiguous() for k, v in trainee.decoder.state_dict().items()}
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"].clone()
    state["model.embed_tokens.weight"][mask[1]] = mask_row
    if lm.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(run.out / "model.safetensors.tmp"))
    (run.out / "model.safetensors.tmp").replace(run.out / "model.safetensors")
    raw = read_config(lm.path)
    raw["blockgen"] = family
    raw["blockgen_training"] = record
    lm.tokenizer.save_pretrained(run.out)
    (run.out / "config.json").write_text(json.dumps(raw, indent=2))


def _start_from(trainee: Trainee, directory: Path, config: AdaptConfig, mask: tuple[str, int]) -> list[dict]:
    """Load an earlier adapter's LoRA weights and mask embedding into a fresh trainee (init_from); returns the
    training records of the runs behind it, oldest first."""
    from peft import set_peft_model_state_dict

    if not adapter_io.is_adapter_dir(directory):
        raise InvalidArgumentError("init_from", str(directory), "is not an adapter directory (no adapter_config.json)")
    if config.lora_rank is None:
        raise InvalidArgumentError("init_from", str(directory), "starts a LoRA run; this run fine-tunes fully "
                                   "(lora_rank=None)")
    raw = adapter_io.read_adapter_config(directory)
    for key, want, got in (("lora_rank", config.lora_rank, raw["lora_rank"]),
                           ("lora_alpha", config.lora_alpha or 2 * config.lora_rank, raw["lora_alpha"]),
                           ("mask token id", mask[1], raw["blockgen"]["mask_token_id"])):
        if want != got:
            raise InvalidArgumentError("init_from", str(directory), f"has {key} {got!r}, this run {want!r}")
    tensors = adapter_io.read_adapter_tensors(directory, raw)
    mask_row = tensors.pop(adapter_io.MASK_EMBEDDING, None)
    expected = adapter_io.lora_state(trainee.decoder)
    if mask_row is None or set(tensors) != set(expected) or any(
            tensors[k].shape != expected[k].shape for k in expected):
        raise InvalidArgumentError("init_from", str(directory), "holds other tensors than this run's LoRA layers")
    device = trainee.mask_embedding.device
    set_peft_model_state_dict(trainee.decoder, {k: v.to(device=device, dtype=torch.float32) for k, v in tensors.items()})
    with torch.no_grad():
        trainee.mask_embedding.copy_(mask_row.to(device=device, dtype=torch.float32))
    earlier = raw.get("training") or {}
    keep = ("steps", "tokens_seen", "train_seconds", "hardware", "loss")
    return [*earlier.get("started_from", []), {k: earlier.get(k) for k in keep}]


def adapt(
    config: AdaptConfig,
    out: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    max_minutes: float | None = None,
    on_progress: Callable[[AdaptProgress], None] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    replan: Callable[[int, int], int] | None = None,
) -> AdaptResult:
    """Run (or continue) an adaptation into `out`. stop_after / max_minutes end this invocation early with a
    checkpoint (the run continues later with resume=True). on_checkpoint(out) is called after each checkpoint is
    written (the loadable model in `out` is then complete), e.g. to copy it somewhere safe.

    replan(steps_done, steps) is asked after every step before the learning-rate decay begins and returns the run's
    new total of steps (e.g. sized to a deadline from the measured step time). The warm-up and the constant learning
    rate do not depend on the total, so a run resized before its decay keeps its schedule (a block-size curriculum
    and the mask-embedding noise stretch with the total)."""
    from accelerate import Accelerator

    from blockgen.models.attention import AttentionKind
    from blockgen.runtime import load

    start_time = time.perf_counter()
    run = _Run(Path(out).expanduser())
    run.check_settings(config, resume)
    accelerator = Accelerator(cpu=config.device == "cpu",
                              mixed_precision="bf16" if torch.cuda.is_available() and config.device != "cpu" else "no")
    base_dtype = config.base_dtype
    if base_dtype == "auto":
        base_dtype = "bfloat16" if accelerator.device.type == "cuda" and config.lora_rank is not None else "float32"
    if base_dtype == "bfloat16" and config.lora_rank is None:
        raise InvalidArgumentError("base_dtype", config.base_dtype, "bfloat16 base weights need a LoRA run "
                                   "(full fine-tuning keeps float32 master weights)")
    lm = load(_base_name(config.base), device=accelerator.device, dtype=base_dtype, quantize=None, pack=False)
    if lm.family.attention is not AttentionKind.CAUSAL:
        raise InvalidArgumentError("base", config.base, f"is already a {lm.family.attention.value} model; "
                                   "adapt takes a causal LM")
    mask = pick_mask_token(lm.tokenizer, config.mask_token)
    if accelerator.is_main_process:  # one process writes the settings and the dataset; the others read them
        if not run.settings.is_file():
            run.write_settings(config)
        examples = _dataset(run, config, lm, on_progress)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        examples = load_examples(run.data, lm.config.vocab_size)

    decoder = lm.model
    if config.lora_rank is not None:
        with torch.random.fork_rng(devices=[]):  # LoRA's A matrices start from the run's seed
            torch.manual_seed(config.seed)
            adapter_io.add_lora(decoder, config.lora_rank, config.lora_alpha or 2 * config.lora_rank)
        if config.gated:
            gate_peft_layers(decoder, decoder.lora_gate)
        for p in decoder.parameters():  # trainable weights in float32 whatever the base's dtype
            if p.requires_grad:
                p.data = p.data.float()
    else:
        decoder.requires_grad_(True)
    decoder.train()
    trainee = Trainee(decoder, mask[1], config.certainty).to(accelerator.device)
    params = [p for _, p in sorted(trainee.named_parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    state = {"step": 0, "tokens_seen": 0, "losses": [], "seconds": 0.0}
    if resume and run.checkpoint.is_dir():
        state = _load_checkpoint(run.checkpoint, trainee, optimizer)
    elif config.init_from:
        state["started_from"] = _start_from(trainee, Path(config.init_from).expanduser(), config, mask)
    model, optimizer = accelerator.prepare(trainee, optimizer)
    embed_std = float(decoder.model.embed_tokens.weight.detach().float().std())
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.batch_size < world:
        raise InvalidArgumentError("batch_size", config.batch_size, f"is smaller than the {world} processes")

    hardware = _hardware(accelerator.device)
    trained_before = float(state.get("seconds", 0.0))
    first_step_time = time.perf_counter()

    def record() -> dict:
        state["seconds"] = round(trained_before + time.perf_counter() - first_step_time, 1)
        return {"steps": state["step"], "steps_planned": config.steps, "tokens_seen": state["tokens_seen"],
                "hardware": hardware, "train_seconds": state["seconds"],
                "loss": _recent_loss(state["losses"]), "examples": len(examples),
                "data": {"files": config.data, "distilled_prompts": config.distill},
                "settings": config.model_dump(exclude={"data"}), "metrics": {},
                "started_from": state.get("started_from", [])}

    def checkpoint() -> None:
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            exported = record()
            _save_checkpoint(run.checkpoint, unwrapped, optimizer,
                             {k: state[k] for k in ("step", "tokens_seen", "losses", "seconds", "started_from")
                              if k in state})
            _export(run, config, unwrapped, lm, mask, exported)
            if on_checkpoint is not None:
                on_checkpoint(run.out)
        accelerator.wait_for_everyone()

    first = state["step"]

    def last_step() -> int:
        return config.steps if stop_after is None else min(config.steps, first + stop_after)

    packed = None
    if config.pack:
        packed = _PackedRows(examples, config.seq_len, math.lcm(*config.block_sizes), config.seed)
    window_tokens, window_start = 0, time.perf_counter()
    step = first
    while step < last_step():
        block = config.block_size_at(step)
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        extra = {}
        if packed is not None:
            ids, valid, maskable, positions, segments = collate_packed(
                packed.for_step(step, config.batch_size)[rank::world], config.seq_len, pad_id, packed.align)
            extra = {"positions": positions.to(accelerator.device), "segments": segments.to(accelerator.device)}
        else:
            rows = _examples_for_step(examples, step, config.batch_size, config.seed)[rank::world]
            ids, valid, maskable = collate(rows, config.seq_len, pad_id)
        generator = _step_generator(config.seed, step, rank)
        tensors = [t.to(accelerator.device) for t in (ids, valid, maskable)]
        if config.gated:
            batch = gated_batch(*tensors, block_size=block, mask_token_id=mask[1], **extra)
        else:
            batch = build_batch(*tensors, block_size=block, mask_token_id=mask[1], logit_shift=config.logit_shift,
                                generator=generator, suffix_share=config.suffix_share, **extra)
        sigma = config.mask_noise_at(step) * embed_std
        noise = None
        if sigma > 0:  # LLaDA2.0: each masked position gets its own noisy copy of the mask embedding early on
            count = int((batch.input_ids == mask[1]).sum())
            noise = (torch.randn(count, trainee.mask_embedding.shape[0], generator=generator) * sigma).to(accelerator.device)
        with accelerator.autocast():
            loss = model(batch, noise)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise InvalidArgumentError("lr", config.lr, f"training diverged at step {step} (loss {value})")
        value = float(accelerator.unwrap_model(model).cross_entropy)  # the log follows the cross-entropy alone
        seen = int(valid.sum()) * world
        state["step"], state["tokens_seen"] = step + 1, state["tokens_seen"] + seen
        state["losses"].append(round(value, 5))
        window_tokens += seen
        if on_progress and accelerator.is_main_process:
            elapsed = time.perf_counter() - window_start
            on_progress(AdaptProgress("train", step + 1, config.steps, value,
                                      window_tokens / elapsed if elapsed else None, block, config.lr_at(step)))
        if replan is not None and step + 1 < config.steps * (1 - config.decay_fraction):
            steps = max(step + 2, int(replan(step + 1, config.steps)))
            if steps != config.steps:
                config = config.model_copy(update={"steps": steps})
        out_of_time = max_minutes is not None and time.perf_counter() - start_time > max_minutes * 60
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == last_step() or out_of_time:
            checkpoint()
        step += 1
        if out_of_time:
            break
    if state["step"] == first:
        checkpoint()
    return AdaptResult(run.out, state["step"], config.steps, state["tokens_seen"], _recent_loss(state["losses"]),
                       state["step"] >= config.steps, time.perf_counter() - start_time)
