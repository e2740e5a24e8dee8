"""Adapter directories: LoRA weights (peft) plus the mask token's embedding, and the record that makes a causal base
decode as a block-diffusion model.

Layout of an adapter directory:
  adapter_config.json   base ("default" or a checkpoint path), LoRA rank / alpha / target modules, the "blockgen"
                        family record (attention, logit_shift, block_size, mask_token_id), the mask token's text, the
                        weight files, and a free-form training record (data, tokens seen, steps, settings, metrics)
  adapter-NNNNN.safetensors   LoRA A/B matrices (peft names) and "mask_embedding"; split in pieces under a size cap

Loading merges the LoRA deltas into the base weights (peft's merge), so an adapted model runs at the base's speed.
Reading, applying and writing live here, below the loaded model: `blockgen.load` applies adapters and
`blockgen.adapt` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from blockgen.errors import CheckpointNotFoundError, ConfigError, CorruptCheckpointError, TensorError
from blockgen.loading import read_json_object
from blockgen.models.decoder import PROJECTIONS

ADAPTER_CONFIG = "adapter_config.json"
MASK_EMBEDDING = "mask_embedding"
LORA_TARGETS = PROJECTIONS


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def add_lora(model: torch.nn.Module, rank: int, alpha: float, targets=LORA_TARGETS, dropout: float = 0.0):
    """Inject LoRA layers (peft) into the decoder in place (and return it); only they require grad afterwards."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none")
    return inject_adapter_in_model(config, model)


def lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def merge_lora(model: torch.nn.Module) -> None:
    """Fold every LoRA layer into its base Linear and put the plain Linear back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())


def save_adapter(directory: Path, config: dict, tensors: dict[str, torch.Tensor], max_piece_bytes: int = 15 << 20) -> None:
    """Write the adapter (pieces of at most max_piece_bytes) and its config; the config is written last."""
    directory.mkdir(parents=True, exist_ok=True)
    pieces: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if pieces[-1] and size + nbytes > max_piece_bytes:
            pieces.append({})
            size = 0
        pieces[-1][name] = tensor
        size += nbytes
    files = [f"adapter-{i + 1:05d}-of-{len(pieces):05d}.safetensors" for i in range(len(pieces))]
    for old in directory.glob("adapter-*.safetensors"):
        if old.name not in files:
            old.unlink()
    for file, piece in zip(files, pieces):
        save_file(piece, str(directory / (file + ".tmp")))
        (directory / (file + ".tmp")).replace(directory / file)
    record = dict(config, files=files)
    tmp = directory / (ADAPTER_CONFIG + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(directory / ADAPTER_CONFIG)


def read_adapter_config(directory: Path) -> dict:
    path = directory / ADAPTER_CONFIG
    raw = read_json_object(path)
    for key, kind in (("base", str), ("lora_rank", int), ("lora_alpha", (int, float)), ("targets", list),
                      ("blockgen", dict), ("files", list)):
        if not isinstance(raw.get(key), kind):
            raise ConfigError(path, key, f"missing or of the wrong type ({raw.get(key)!r})")
    if not isinstance(raw["blockgen"].get("mask_token_id"), int):
        raise ConfigError(path, "blockgen.mask_token_id", "an adapter needs its mask token id")
    return raw


def read_adapter_tensors(directory: Path, config: dict) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name in config["files"]:
        file = directory / name
        if Path(name).name != name or file.suffix != ".safetensors":
            raise ConfigError(directory / ADAPTER_CONFIG, "files", f"{name!r} is not a safetensors file name")
        if not file.is_file():
            raise CheckpointNotFoundError(file, f"adapter piece named in {ADAPTER_CONFIG} is missing")
        try:
            tensors.update(load_file(str(file)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CorruptCheckpointError(file, f"cannot read safetensors ({exc})") from None
    return tensors


def apply_adapter(model, directory: Path, config: dict, *, merge: bool = True):
    """Merge the adapter's LoRA weights into `model` (a Decoder) and set the mask token's embedding, checking names
    and shapes against the model. merge=False leaves the base weights as they are and returns the LoRA terms instead,
    {projection name: (down (r, in), up (out, r) with the scaling folded in)}, for a quantized base to add exactly
    (blockgen.models.quant.quantize_decoder's low_rank)."""
    from peft import set_peft_model_state_dict

    tensors = read_adapter_tensors(directory, config)
    mask_row = tensors.pop(MASK_EMBEDDING, None)
    embed = model.model.embed_tokens.weight
    if mask_row is None:
        raise TensorError(directory, MASK_EMBEDDING, "missing from the adapter")
    if tuple(mask_row.shape) != (embed.shape[1],):
        raise TensorError(directory, MASK_EMBEDDING, f"shape {tuple(mask_row.shape)}, expected {(embed.shape[1],)}")
    dtype, device = model.dtype, model.device
    add_lora(model, config["lora_rank"], config["lora_alpha"], config["targets"])
    expected = lora_state(model)
    for name, tensor in tensors.items():
        if name not in expected:
            raise TensorError(directory, name, "not a LoRA tensor of this base model")
        if tensor.shape != expected[name].shape:
            raise TensorError(directory, name, f"shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
    for name in expected:
        if name not in tensors:
            raise TensorError(directory, name, "missing from the adapter")
    set_peft_model_state_dict(model, {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()})
    low_rank = None if merge else unload_lora(model)
    if merge:
        merge_lora(model)
    if config["blockgen"].get("gated"):  # the base's logits must stay the base's, its mask token's column too
        model.untie_head()
    with torch.no_grad():
        embed[config["blockgen"]["mask_token_id"]] = mask_row.to(device=device, dtype=dtype)
    model.requires_grad_(False)
    return low_rank


def unload_lora(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Put every LoRA layer's plain base Linear back, unmerged; returns each one's (down, up * scaling) by name."""
    from peft.tuners.lora import LoraLayer

    terms = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            key = module.active_adapters[0]
            down = module.lora_A[key].weight.detach()
            up = module.lora_B[key].weight.detach() * module.scaling[key]
            terms[name] = (down.clone(), up.clone())
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    return terms
