"""The native decoder's block forward against the memory-bandwidth bound, with random weights in the real shapes of
the checkpoints the engine serves (LLaDA-8B, Qwen2.5-1.5B as Fast-dLLM v2 uses it, SDAR-1.7B).

For each shape, batch size and context: a KV cache filled to the context (prefilled in chunks), then the engine's
block step: `--block` new tokens attending over the cache without writing it (a refinement pass), logits at the
block only. Timed as the median of `--repeats` after warm-up (CUDA-synchronized). The bound is the bytes such a
forward must read, weights (the LM head counted, the embedding rows not) plus the cache's keys and values, over the
device's measured copy bandwidth (a large device-to-device copy, read plus write). Prints a table with the share of
the bound reached and writes the rows as JSON.

On CPU `--tiny` runs the same measurement at toy shapes (the dry-run test); on a GPU run it as the playbook's
`engine` call (`python3 scripts/gpu/playbook.py engine`), which also runs the GPU tests.

Usage: python scripts/gpu/engine_speed.py [--shapes llada-8b qwen2.5-1.5b sdar-1.7b] [--batches 1 8]
                                          [--contexts 1024 8192] [--block 32] [--repeats 10] [--tiny] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The published configs' shapes (config.json of each checkpoint), as the native decoder reads them.
SHAPES = {
    "llada-8b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 126464,
                 "max_position_embeddings": 4096, "rope_theta": 500000.0, "rms_norm_eps": 1e-5},
    "qwen2.5-1.5b": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                     "tie_word_embeddings": True},
    "sdar-1.7b": {"model_type": "qwen3", "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                  "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                  "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                  "tie_word_embeddings": True},
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 512, "head_dim": 16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second a device-to-device copy moves (read plus write), best of five."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def build(raw: dict, device: torch.device, dtype: torch.dtype):
    """The native decoder of this config with random weights (normal, std 0.02; norms at 1), made on the device."""
    from blockgen.models.config import config_from_dict
    from blockgen.models.decoder import Decoder

    with torch.device("meta"):
        model = Decoder(config_from_dict(raw))
    model = model.to_empty(device=device).to(dtype).eval()
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    return model


def weight_bytes(model) -> int:
    """What one forward reads of the weights: every parameter but the embedding (a few rows are looked up), the LM
    head included (the tied embedding counts once, as the head)."""
    cfg = model.config
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.model.embed_tokens.weight
    if not cfg.tie_word_embeddings:
        total -= embedding.numel() * embedding.element_size()
    return total


@torch.inference_mode()
def measure(model, batch: int, context: int, block: int, repeats: int, chunk: int = 1024) -> float:
    """Seconds of one block step (median) over a cache of `context` tokens per row."""
    from blockgen.models import Attention
    from blockgen.models.cache import KVCache

    device = model.device
    attention = Attention.block_causal(block)
    cache = KVCache.for_model(model, batch, context + block)
    vocab = model.config.vocab_size
    generator = torch.Generator(device=device).manual_seed(1)
    for start in range(0, context, chunk):
        n = min(chunk, context - start)
        ids = torch.randint(0, vocab, (batch, n), device=device, generator=generator)
        positions = torch.arange(start, start + n, device=device).expand(batch, n)
        model.hidden_states(ids, positions=positions, attention=attention, cache=cache, write_cache=True)
    ids = torch.randint(0, vocab, (batch, block), device=device, generator=generator)
    positions = torch.arange(context, context + block, device=device).expand(batch, block)
    at = torch.arange(block, device=device)
    times = []
    for i in range(repeats + 3):
        _sync(device)
        start = time.perf_counter()
        model(ids, positions=positions, attention=attention, cache=cache, write_cache=False, logits_at=at)
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--tiny", action="store_true", help="toy shapes (a CPU dry run)")
    parser.add_argument("--copy-bytes", type=int, default=1 << 30)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dtype = (torch.bfloat16 if device.type == "cuda" else torch.float32) if args.dtype == "auto" \
        else getattr(torch, args.dtype)
    bandwidth = copy_bandwidth(device, args.copy_bytes if not args.tiny else 1 << 24)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, {str(dtype).removeprefix('torch.')}, copy bandwidth {bandwidth / 1e9:.0f} GB/s; "
          f"block {args.block}")
    print(f"{'shape':14} {'batch':>5} {'context':>7} {'ms':>9} {'bound ms':>9} {'of bound':>8}")
    rows = []
    for shape in args.shapes:
        raw = dict(SHAPES[shape], **(TINY if args.tiny else {}))
        model = build(raw, device, dtype)
        weights = weight_bytes(model)
        cfg = model.config
        for batch in args.batches:
            for context in args.contexts:
                seconds = measure(model, batch, context, args.block, args.repeats)
                kv = 2 * cfg.num_layers * batch * cfg.num_kv_heads * cfg.head_dim * context * model.dtype.itemsize
                bound = (weights + kv) / bandwidth
                row = {"shape": shape, "batch": batch, "context": context, "block": args.block,
                       "ms": round(seconds * 1e3, 3), "bound_ms": round(bound * 1e3, 3),
                       "of_bound": round(bound / seconds, 3), "weight_bytes": weights, "kv_bytes": kv}
                rows.append(row)
                print(f"{shape:14} {batch:5} {context:7} {row['ms']:9.2f} {row['bound_ms']:9.2f} "
                      f"{row['of_bound']:8.0%}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "dtype": str(dtype), "copy_bandwidth": bandwidth,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
