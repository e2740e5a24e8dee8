"""Tiny real checkpoints for tests: transformers models from small configs with random weights, saved to disk with a
tokenizer trained here, then loaded through the same path users take."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CORPUS = [
    "The river ran past the old mill and the children watched the boats.",
    "A report on tides: the moon pulls the sea, and the water rises twice a day.",
    "She opened the door, lit the lamp and began to write the first chapter.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and words, sentences, paragraphs.",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(vocab_size: int = 128):
    """A byte-level BPE tokenizer trained on a few sentences, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:40]
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


def tiny_hf_model(arch: str = "llama", *, tie: bool = False, seed: int = 0, vocab_size: int | None = None, **overrides):
    """A transformers causal LM of the given architecture with a tiny config and random weights (fp32, eval)."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    }
    config_cls, model_cls = classes[arch]
    kwargs = dict(
        vocab_size=vocab_size or len(make_tokenizer()),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        rope_theta=5000.0,
        eos_token_id=0,
    )
    if arch == "qwen3":
        kwargs["head_dim"] = 24
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    with torch.no_grad():  # norms start at 1.0; randomise them so a swapped norm cannot hide
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def save_checkpoint(model, directory: Path, *, max_shard_size: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    make_tokenizer().save_pretrained(directory)
    return directory


def write_llada_checkpoint(model, directory: Path) -> Path:
    """The weights of a tiny LlamaForCausalLM (untied, MHA or GQA) saved under LLaDA-8B's names and config keys."""
    from safetensors.torch import save_file

    cfg = model.config
    rename = {
        "self_attn.q_proj": "q_proj",
        "self_attn.k_proj": "k_proj",
        "self_attn.v_proj": "v_proj",
        "self_attn.o_proj": "attn_out",
        "mlp.gate_proj": "ff_proj",
        "mlp.up_proj": "up_proj",
        "mlp.down_proj": "ff_out",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ff_norm",
    }
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("model.layers."):
            _, _, idx, rest = name.split(".", 3)
            part, kind = rest.rsplit(".", 1)
            tensors[f"model.transformer.blocks.{idx}.{rename[part]}.{kind}"] = tensor.contiguous()
        else:
            top = {"model.embed_tokens.weight": "wte.weight", "model.norm.weight": "ln_f.weight",
                   "lm_head.weight": "ff_out.weight"}[name]
            tensors[f"model.transformer.{top}"] = tensor.contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / "model.safetensors")
    tokenizer = make_tokenizer()
    config = {
        "model_type": "llada",
        "architectures": ["LLaDAModelLM"],
        "d_model": cfg.hidden_size,
        "n_layers": cfg.num_hidden_layers,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": cfg.num_key_value_heads,
        "mlp_hidden_size": cfg.intermediate_size,
        "max_sequence_length": cfg.max_position_embeddings,
        "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.vocab_size,
        "rope_theta": cfg.rope_parameters["rope_theta"],
        "rms_norm_eps": cfg.rms_norm_eps,
        "layer_norm_type": "rms",
        "activation_type": "silu",
        "weight_tying": False,
        "include_bias": False,
        "mask_token_id": tokenizer.convert_tokens_to_ids("<|mask|>"),
        "eos_token_id": tokenizer.eos_token_id,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(directory)
    return directory
