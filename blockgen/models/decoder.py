"""One decoder for the LLaMA / Qwen2 / Qwen3 family (and LLaDA, whose weights are renamed onto it).

Parameter names follow Hugging Face's LLaMA layout, so those checkpoints load without renaming.
`forward` returns logits and nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blockgen.errors import InvalidArgumentError
from blockgen.models.attention import CAUSAL, DENSE, Attention, build_mask, structural_mask
from blockgen.models.cache import KVCache
from blockgen.models.config import ModelConfig
from blockgen.models.gate import LoraGate
from blockgen.models.rope import RotaryEmbedding, apply_rotary, ntk_factor_for


# The decoder's linear projections by attribute name (what LoRA adapts and int8 quantizes); the LM head is apart.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalized in float32, cast back, then scaled (as LLaMA's RMSNorm); one fused op for the normalization
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.qkv_proj = None  # q, k and v in one layer (set by quantization or packing: one kernel call, not three)
        self.qkv_sizes = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int, write: bool):
        b, t, _ = x.shape
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        if self.qkv_proj is not None:  # fused: q and k rotate in one call, as one run of heads
            qk, v = self.qkv_proj(x).split((self.qkv_sizes[0] + self.qkv_sizes[1], self.qkv_sizes[2]), dim=-1)
            qk = qk.view(b, t, heads + kv_heads, dim)
            if hasattr(self, "q_norm"):
                qk = torch.cat((self.q_norm(qk[:, :, :heads]), self.k_norm(qk[:, :, heads:])), dim=2)
            qk = apply_rotary(qk.transpose(1, 2), cos, sin)  # (B, H + Hkv, T, D)
            q, k = qk[:, :heads], qk[:, heads:]
            v = v.view(b, t, kv_heads, dim).transpose(1, 2)
        else:
            q = self.q_proj(x).view(b, t, heads, dim)
            k = self.k_proj(x).view(b, t, kv_heads, dim)
            v = self.v_proj(x).view(b, t, kv_heads, dim)
            if hasattr(self, "q_norm"):
                q, k = self.q_norm(q), self.k_norm(k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.keys_values(layer, k, v, write)  # (B, Hkv, S + T, D)
        grouped = self.num_kv_heads != self.num_heads
        if grouped and mask is not None and q.is_cuda:
            # CUDA's fused kernels that take a mask do not take grouped heads (SDPA would fall back to the math
            # kernel, O(T^2) memory): give them one key/value head per query head, as enable_gqa means.
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            grouped = False
        causal = mask is CAUSAL  # no mask tensor: SDPA's own causal rule (no cached keys)
        mask = None if causal else mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=grouped)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gate_up_proj = None  # gate and up in one layer (set by quantization or packing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = SelfAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache, layer, write):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, write)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, ntk_factor: float = 1.0):
        super().__init__()
        self.config = cfg
        self.model = Body(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, ntk_factor)
        self.lora_gate = LoraGate()  # read by gated adapter terms (blockgen.models.gate); unset: none applies

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def ntk_factor(self) -> float:
        return self.rope.ntk_factor

    def set_ntk_factor(self, factor: float) -> None:
        """Scale RoPE's base by `factor` (1.0 is the trained RoPE)."""
        self.rope.set_ntk_factor(factor)

    def ntk_factor_for(self, context_length: int, trained_length: int | None = None) -> float:
        """The factor the extrapolation law picks for a context of this many tokens (1.0 within the trained length:
        `trained_length`, by default the config's max_position_embeddings; above it always more than 1.0)."""
        cfg = self.config
        return ntk_factor_for(context_length, head_dim=cfg.head_dim, theta=cfg.rope_theta,
                              trained_length=trained_length or cfg.max_position_embeddings)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        attention: Attention = Attention(),
        cache: KVCache | None = None,
        write_cache: bool = True,
        token_mask: torch.Tensor | None = None,
        logits_at: torch.Tensor | None = None,
        ntk_factor: float | None = None,
        attn_mask: torch.Tensor | None = None,
        lora_gate: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for input_ids (B, T); (B, N, V) for the N token indices in `logits_at` when given.

        positions: absolute positions (B, T); by default they continue after the cache.
        attention: causal, block-causal (with its block size) or bidirectional, over cache + new tokens.
        cache: keys/values of earlier tokens; the new ones are appended when write_cache is True.
        token_mask: (B, T) bool, False for padding tokens, which no query attends to.
        ntk_factor: this call's RoPE NTK factor (None: the model's own, 1.0 unless set at load); a cache must be
        read with the factor it was written with.
        attn_mask, lora_gate: see `hidden_states`.
        """
        h = self.hidden_states(input_ids, positions=positions, attention=attention, cache=cache,
                               write_cache=write_cache, token_mask=token_mask, ntk_factor=ntk_factor,
                               attn_mask=attn_mask, lora_gate=lora_gate)
        if logits_at is not None:
            h = h[:, logits_at]
        return self.logits(h)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head over final hidden states (..., H) -> (..., V)."""
        kernel = getattr(self, "head_kernel", None)  # set by blockgen.models.quant (quantize_decoder, pack_decoder)
        if kernel is not None:
            return kernel(hidden)
        if "lm_head" not in self._modules:  # tied (and not untied by `untie_head`)
            return F.linear(hidden, self.model.embed_tokens.weight)
        return self.lm_head(hidden)

    def untie_head(self) -> None:
        """Give a tied model an LM head of its own, a copy of the embedding as it is now: a change to an embedding
        row afterwards (an adapter's mask token) then leaves the head, and so the model's logits, as they were."""
        if "lm_head" in self._modules:
            return
        embed = self.model.embed_tokens.weight
        self.lm_head = nn.Linear(embed.shape[1], embed.shape[0], bias=False, device=embed.device, dtype=embed.dtype)
        with torch.no_grad():
            self.lm_head.weight.copy_(embed)
        self.lm_head.requires_grad_(False)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        attention: Attention = Attention(),
        cache: KVCache | None = None,
        write_cache: bool = True,
        token_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        ntk_factor: float | None = None,
        lora_gate: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Final normalised hidden states (B, T, H); `forward`'s arguments, plus:

        attn_mask: a (B, 1, T, S + T) bool mask (True = may attend) over the S cached keys (none padding) and the new
        ones, used instead of the one `attention` induces.
        inputs_embeds: (B, T, H) input embeddings used instead of looking up input_ids.
        lora_gate: (B, T) bool or 0/1, the positions where a gated adapter's terms apply, or an int: every position
        from it on (None: nowhere).
        """
        if input_ids.dim() != 2:
            raise InvalidArgumentError("input_ids", tuple(input_ids.shape), "must be (batch, tokens)")
        b, t = input_ids.shape
        start = cache.length if cache is not None else 0
        # default positions continue the cache, so with no padding the mask follows from the shapes alone (often no
        # mask at all: SDPA may then pick its fastest kernel)
        shape = DENSE
        if positions is None:
            positions = torch.arange(start, start + t, device=input_ids.device).expand(b, t)
            if token_mask is None and attn_mask is None and not (cache is not None and cache.padded):
                shape = structural_mask(attention, start, t)
        elif positions.shape != input_ids.shape:
            raise InvalidArgumentError("positions", tuple(positions.shape), f"must match input_ids {(b, t)}")
        if attn_mask is not None and cache is not None and cache.padded:
            raise InvalidArgumentError("attn_mask", tuple(attn_mask.shape), "cannot describe a cache with padding")
        if cache is not None:
            cache.check_room(t if write_cache else 0, b)
        if attn_mask is not None:
            mask = attn_mask
        elif shape != DENSE:
            mask = shape
        else:
            if cache is not None:
                key_positions, key_valid = cache.key_slots(positions, token_mask)
            else:
                key_positions, key_valid = positions, token_mask
            mask = build_mask(attention, positions, key_positions, key_valid, token_mask)

        h = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        cos, sin = self.rope(positions, h.dtype, ntk_factor)
        self.lora_gate.set(lora_gate, t)
        try:
            for i, layer in enumerate(self.model.layers):
                h = layer(h, cos, sin, mask, cache, i, write_cache)
        finally:
            self.lora_gate.set(None, t)
        if cache is not None and write_cache:
            cache.advance(positions, token_mask)
        return self.model.norm(h)
