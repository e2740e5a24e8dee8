"""CPU speed of the default path, side by side in one run on the same GGUF and thread count (ratios are the result).

Rows (greedy, the same chat prompt, the same number of new tokens, end-of-text ignored so every row decodes as many):
  llama.cpp          llama-cpp-python on the default's GGUF (Q4_1/Q8_0 as shipped); skipped, with the reason, when
                     the optional package is not installed (`pip install llama-cpp-python`, which builds llama.cpp)
  transformers       `generate` on the converted checkpoint, float32
  blockgen AR        block size 1, one token per forward: float32 (plain layers, and packed for oneDNN where PyTorch
                     has the kernels), bfloat16 (where the CPU has native bf16), and weight-only int8 / int4 in the
                     automatic dtype; each at one row and at three (the writer's batch of candidates; tok/s counts
                     every row's tokens)
  blockgen block 8   the default with its block-diffusion adapter, threshold 0.9, when the package ships one
Then the writer end to end: tokens/s of `write_report` on a fixed request (--writer-words, 0 skips it), against the
AR decoder's raw tokens/s in the same dtype. Ratios are printed against llama.cpp (when present) and transformers.

Never run two PyTorch processes at once when timing on a small machine: their threads fight.

Usage: python benchmarks/cpu_speed.py [--tokens 128] [--threads N] [--writer-words 1500] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

import blockgen
from blockgen.runtime import auto_dtype, auto_pack, auto_quantize, cpu_bf16

PROMPT = "Write a detailed report on how tides work, with sections on the moon, the sun and coastal effects."


def _best(run, repeats: int) -> float:
    """Seconds of the fastest of `repeats` runs (after one warm-up run)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


# Run alone in a child process: llama.cpp's OpenMP runtime and PyTorch's in one process crash (segfault) here.
_LLAMA_CHILD = """
import json, sys, time
from llama_cpp import Llama
path, prompt, tokens, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
def run():
    llm.reset()
    llm.eval(ids)
    for _ in range(tokens):
        token = llm.sample(temp=0.0, top_k=1)
        llm.eval([token])
run()
best = None
for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best or 1e9, time.perf_counter() - start)
print(json.dumps({"tokens_per_second": tokens / best}))
"""


def bench_llama_cpp(prompt: str, tokens: int, threads: int, repeats: int) -> tuple[float | None, str]:
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("llama_cpp") is None:
        return None, "skipped: llama-cpp-python is not installed (pip install llama-cpp-python; it builds llama.cpp)"
    from blockgen.loading import default_gguf_path

    done = subprocess.run([sys.executable, "-c", _LLAMA_CHILD, str(default_gguf_path()), prompt, str(tokens),
                           str(threads), str(repeats)], capture_output=True, text=True)
    if done.returncode:
        return None, f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_second"], \
        "the shipped GGUF (Q4_1 layers, Q8_0 embedding), prefill included"


def bench_transformers(lm, ids, tokens: int, repeats: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(lm.path, dtype=torch.float32).eval()
    x = torch.tensor([ids])

    def run():
        with torch.inference_mode():
            model.generate(x, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)

    return tokens / _best(run, repeats)


def bench_blockgen(lm, ids, tokens: int, repeats: int, block: int = 1, rows: int = 1) -> tuple[float, float]:
    """(tokens/s over all `rows` rows, tokens per forward) of greedy decoding of `ids` repeated `rows` times."""
    lm = dataclasses.replace(lm, stop_token_ids=())  # end-of-text ignored: every row decodes `tokens`
    options = dict(max_new_tokens=tokens, block_size=block, temperature=0.0)
    if block > 1:
        options.update(steps=block, scheduler="threshold", threshold=0.9)
    got = {}

    def run():
        got["r"] = lm.generate_results([ids] * rows, **options)

    seconds = _best(run, repeats)
    r = got["r"]
    return sum(len(x.tokens) for x in r) / seconds, r[0].stats.tokens_per_forward


def bench_writer(words: int) -> tuple[float, float]:
    from blockgen import write_report

    lm = blockgen.load("default", device="cpu")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        doc = write_report("how tides work", words=words, out=out, model=lm, seed=0)
        seconds = time.perf_counter() - start
    tokens = sum(p.tokens for p in doc.paragraphs)
    return tokens / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--writer-words", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    auto = auto_dtype(cpu)
    print(f"CPU, {args.threads} threads; native bf16: {cpu_bf16() or 'no'}; dtype auto -> "
          f"{str(auto).removeprefix('torch.')}; {args.tokens} new tokens, greedy", flush=True)

    rows: list[tuple[str, float | None, str]] = []
    base = blockgen.load("default-ar", device="cpu", dtype="float32", quantize=None, pack=False)  # plain layers
    ids = base.encode(PROMPT, chat=True)
    text = base.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                              add_generation_prompt=True)
    llama_tps, note = bench_llama_cpp(text, args.tokens, args.threads, args.repeats)
    rows.append(("llama.cpp (llama-cpp-python)", llama_tps, note))
    print(f"  llama.cpp: {note if llama_tps is None else f'{llama_tps:.1f} tok/s'}", flush=True)
    hf = bench_transformers(base, ids, args.tokens, args.repeats)
    rows.append(("transformers generate, float32", hf, ""))
    print(f"  transformers: {hf:.1f} tok/s", flush=True)

    from blockgen.models.quant import can_pack

    quantized = auto_quantize(cpu, auto)
    chosen = (auto, quantized, auto_pack(cpu, auto, quantized))  # what load() picks by itself
    decoder = None  # the automatic choice's one-row tokens/s
    variants = [("float32", torch.float32, None, False)]  # (label, dtype, quantize, pack)
    if can_pack():
        variants.append(("float32 packed for oneDNN", torch.float32, None, True))
    if cpu_bf16():
        variants.append(("bfloat16", torch.bfloat16, None, False))
    low = torch.bfloat16 if cpu_bf16() else torch.float32
    for mode in ("int8", "int4"):
        variants.append((f"{mode} weights, {str(low).removeprefix('torch.')}", low, mode, False))
    raw = {}
    for label, dtype, quantize, pack in variants:
        lm = base if (dtype, quantize, pack) == (torch.float32, None, False) else blockgen.load(
            "default-ar", device="cpu", dtype=dtype, quantize=quantize, pack=pack)  # None: not quantized
        automatic = (dtype, quantize, pack) == chosen
        for rows_count in (1, 3):
            tps, _ = bench_blockgen(lm, ids, args.tokens, args.repeats, rows=rows_count)
            raw[(label, rows_count)] = tps
            name = f"blockgen AR, {label}, {rows_count} row{'s' if rows_count > 1 else ''}"
            rows.append((name, tps, "the automatic choice" if automatic else ""))
            print(f"  {name}: {tps:.1f} tok/s", flush=True)
        if automatic:
            decoder = raw[(label, 1)]  # what the writer's kept tokens are measured against

    default = blockgen.load("default", device="cpu")
    if default.family.mask_token_id is not None and default.family.attention.value == "block_causal":
        tps, per_forward = bench_blockgen(default, ids, args.tokens, args.repeats, block=8)
        rows.append((f"blockgen block 8 (adapter), {str(default.dtype).removeprefix('torch.')}", tps,
                     f"{per_forward:.2f} tokens/forward"))
    else:
        rows.append(("blockgen block 8 (adapter)", None, "skipped: the package ships no adapter yet"))
    del default

    print()
    print(f"{'row':44s} {'tok/s':>7s} {'x llama.cpp':>11s} {'x transformers':>14s}  note")
    for label, tps, note in rows:
        if tps is None:
            print(f"{label:44s} {'-':>7s} {'-':>11s} {'-':>14s}  {note}")
            continue
        vs_llama = f"{tps / llama_tps:.2f}" if llama_tps else "-"
        print(f"{label:44s} {tps:7.1f} {vs_llama:>11s} {tps / hf:14.2f}  {note}")

    if args.writer_words and decoder is None:
        print(f"\nwriter skipped: the automatic choice {chosen} is none of the rows above (BLOCKGEN_CPU_DTYPE?)")
    elif args.writer_words:
        tps, seconds = bench_writer(args.writer_words)
        print(f"\nwriter, write_report('how tides work', words={args.writer_words}), automatic dtype and quantization: "
              f"{seconds:.0f} s, {tps:.1f} kept tokens/s = {tps / decoder:.2f}x the AR decoder's raw {decoder:.1f} "
              "tok/s at one row (target >= 0.9x; it draws three candidates a paragraph and keeps one)")


if __name__ == "__main__":
    main()
