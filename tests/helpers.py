"""Tiny real checkpoints for tests: transformers models from small configs with random weights, saved to disk with a
tokenizer built here, then loaded through the same path users take."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


MERGES = [("t", "h"), ("h", "e"), ("th", "e"), ("Ġ", "t"), ("Ġt", "he"), ("i", "n"), ("e", "r")]


def make_tokenizer():
    """A byte-level BPE tokenizer with a fixed vocabulary (special tokens, the 256 byte symbols, a few merges),
    wrapped as a transformers fast tokenizer. Built, not trained, so every call gives the same ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols += ["".join(pair) for pair in MERGES]
    tok = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=MERGES))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
    wrapped.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    return wrapped


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


_GGUF_LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_GGUF_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def write_gguf(model, path: Path, arch: str, *, chat_template: bool = False) -> Path:
    """A tiny transformers model written as GGUF the way llama.cpp lays it out (LLaMA q/k rows permuted into
    interleaved rotary pairs), with this module's tokenizer (and, if asked, its chat template) in the metadata."""
    import gguf
    import numpy as np

    cfg, tok = model.config, make_tokenizer()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    vocab = [token for token, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_types([3 if token in SPECIAL else 1 for token in vocab])
    writer.add_token_merges([" ".join(pair) for pair in MERGES])
    writer.add_bos_token_id(tok.eos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    if chat_template:
        writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # a tied head is the embedding: llama.cpp writes no output.weight then
        array = tensor.float().numpy()
        if name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            part, kind = rest.rsplit(".", 1)
            if arch == "llama" and part in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = cfg.num_attention_heads if part.endswith("q_proj") else cfg.num_key_value_heads
                rows = array.shape[0]
                array = array.reshape(heads, 2, rows // heads // 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)
            name = f"blk.{layer}.{_GGUF_LAYER[part]}.{kind}"
        else:
            name = _GGUF_TOP[name]
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def diffusion_checkpoint(directory: Path, *, attention: str = "block_causal", shift: bool = False,
                         block_size: int = 4, arch: str = "llama", seed: int = 0, **overrides) -> Path:
    """A tiny checkpoint that decodes as a block-diffusion model: random weights with a wide init (so confidences
    spread between ~0.1 and ~0.99 and thresholds commit several tokens at once), and a "blockgen" family record."""
    model = tiny_hf_model(arch, seed=seed, initializer_range=0.5, **overrides)
    save_checkpoint(model, directory)
    config = json.loads((directory / "config.json").read_text())
    config["blockgen"] = {
        "attention": attention,
        "logit_shift": shift,
        "block_size": block_size,
        "mask_token_id": make_tokenizer().convert_tokens_to_ids("<|mask|>"),
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def tiny_sd_pipeline(directory: Path | None = None, seed: int = 0, safe: bool = True):
    """A tiny StableDiffusionPipeline from small configs (random weights) with a tokenizer made here (letters as
    BPE symbols, no merges); saved to `directory` (safetensors unless safe=False) when given."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2,
    )
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=32)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for code in range(ord("a"), ord("z") + 1):
        vocab[chr(code)] = len(vocab)
        vocab[chr(code) + "</w>"] = len(vocab)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tiny-clip-tok-") as tok_dir:  # read whole by the tokenizer, then gone
        tok_dir = Path(tok_dir)
        (tok_dir / "vocab.json").write_text(json.dumps(vocab))
        (tok_dir / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16,
    ))
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if directory is not None:
        pipe.save_pretrained(directory, safe_serialization=safe)
    return pipe
