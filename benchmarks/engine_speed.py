"""Engine speed, side by side in one run (ratios, not absolute times, are the result).

(a) blockgen's cached block decoding vs diffusers' LLaDA2Pipeline (no cache) on the same model, scheduler
    (diffusers' BlockRefinementScheduler) and settings, at several generation lengths; the tokens must be identical.
    The model is the default's weights run as a block-causal, no-shift model (as LLaDA2 decodes); --layers keeps only
    the first N layers so that the uncached baseline finishes in minutes on a small CPU.
(b) blockgen's AR mode (block size 1) vs transformers' generate on SmolLM2-135M (greedy; tokens must be identical).
(c) the default model at block 8 with a threshold scheduler vs (b). The default is an AR model that was not adapted
    to block diffusion, so its text at block 8 is not meaningful yet; the row shows the engine's cost per token.

Usage: python benchmarks/engine_speed.py [--lengths 256 512 1024] [--layers 8] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import torch

import blockgen
from blockgen.engine import DecodeSettings, FinishEvent, StepEvent, decode
from blockgen.engine.compat import PipelineModel
from blockgen.models import Attention, AttentionKind

PROMPT = "Write a detailed report on how tides work, with sections on the moon, the sun and coastal effects."


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _blockgen_run(lm, family, scheduler, prompt_ids, settings):
    forwards, tokens = 0, None
    _sync(lm.device)
    start = time.perf_counter()
    for event in decode(lm.model, family, scheduler, [prompt_ids], settings):
        forwards += isinstance(event, StepEvent)
        if isinstance(event, FinishEvent):
            tokens = event.tokens
    _sync(lm.device)
    return tokens, forwards, time.perf_counter() - start


def bench_pipeline(lm, lengths, block, steps, threshold):
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    mask_id = lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    family = dataclasses.replace(lm.family, attention=AttentionKind.BLOCK_CAUSAL, logit_shift=False,
                                 mask_token_id=mask_id, block_size=block)
    prompt_ids = lm.encode(PROMPT, chat=True)
    rows = []
    for gen in lengths:
        gen = gen - (len(prompt_ids) + gen) % block if (len(prompt_ids) + gen) % block else gen  # end on a block
        make = lambda: BlockRefinementScheduler(block_length=block, num_inference_steps=steps, threshold=threshold)  # noqa: E731
        model = PipelineModel(lm.model, Attention.block_causal(block), mask_id)
        pipe = LLaDA2Pipeline(model=model, scheduler=make(), tokenizer=lm.tokenizer)
        pipe.set_progress_bar_config(disable=True)
        calls = {"n": 0}

        def count(_pipe, _step, _t, kwargs, calls=calls):
            calls["n"] += 1
            return {}

        _sync(lm.device)
        start = time.perf_counter()
        with torch.inference_mode():
            expected = pipe(input_ids=torch.tensor([prompt_ids], device=lm.device), use_chat_template=False,
                            gen_length=gen, block_length=block, num_inference_steps=steps, temperature=0.0,
                            sampling_method="greedy", threshold=threshold, editing_threshold=None,
                            eos_early_stop=False, mask_token_id=mask_id, output_type="seq",
                            callback_on_step_end=count).sequences[0].tolist()
        _sync(lm.device)
        base_s = time.perf_counter() - start
        settings = DecodeSettings(max_new_tokens=gen, block_size=block, steps=steps, cache="exact", stop_token_ids=())
        tokens, forwards, ours_s = _blockgen_run(lm, family, make(), prompt_ids, settings)
        rows.append((gen, base_s, calls["n"], ours_s, forwards, tokens == expected))
        print(f"  (a) {gen:5d} tokens: LLaDA2Pipeline {base_s:7.2f}s ({calls['n']} forwards), "
              f"blockgen {ours_s:6.2f}s ({forwards} forwards), {base_s / ours_s:5.1f}x, "
              f"tokens identical: {tokens == expected}", flush=True)
    return rows


def bench_ar(lm, new_tokens):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(lm.path, dtype=lm.dtype).to(lm.device).eval()
    ids = lm.encode(PROMPT, chat=True)
    with torch.inference_mode():  # warm both up
        reference.generate(torch.tensor([ids], device=lm.device), max_new_tokens=4, do_sample=False)
        lm.generate_results(ids, max_new_tokens=4, block_size=1)
    _sync(lm.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = reference.generate(torch.tensor([ids], device=lm.device), max_new_tokens=new_tokens, do_sample=False,
                                 min_new_tokens=new_tokens)
    _sync(lm.device)
    hf_s = time.perf_counter() - start
    expected = out[0, len(ids):].tolist()
    settings = DecodeSettings(max_new_tokens=new_tokens, block_size=1, steps=1, cache="exact", stop_token_ids=())
    from blockgen.engine import ThresholdScheduler

    tokens, forwards, ours_s = _blockgen_run(lm, lm.family, ThresholdScheduler(), ids, settings)
    print(f"  (b) AR, {new_tokens} tokens: transformers generate {new_tokens / hf_s:6.1f} tok/s, "
          f"blockgen block 1 {new_tokens / ours_s:6.1f} tok/s ({forwards} forwards), "
          f"{hf_s / ours_s:4.2f}x, tokens identical: {tokens == expected}", flush=True)
    return hf_s, ours_s, tokens == expected


def bench_block8(lm, new_tokens, ar_seconds, threshold):
    from blockgen.engine import ThresholdScheduler

    mask_id = lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    family = dataclasses.replace(lm.family, mask_token_id=mask_id)
    ids = lm.encode(PROMPT, chat=True)
    settings = DecodeSettings(max_new_tokens=new_tokens, block_size=8, steps=8, cache="exact", stop_token_ids=())
    tokens, forwards, seconds = _blockgen_run(lm, family, ThresholdScheduler(threshold=threshold), ids, settings)
    print(f"  (c) default at block 8, threshold {threshold}: {new_tokens / seconds:6.1f} tok/s, "
          f"{len(tokens) / forwards:.2f} tokens/forward, {ar_seconds / seconds:4.2f}x the AR mode of (b)", flush=True)
    return seconds, forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--layers", type=int, default=None, help="keep the first N layers for (a)")
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="refinement steps per block in (a)")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--ar-tokens", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--only", choices=["a", "b", "c"], nargs="+", default=["a", "b", "c"])
    args = parser.parse_args()
    torch.manual_seed(0)

    lm = blockgen.load("default", device=args.device, dtype=args.dtype)
    print(f"device {lm.device} {str(lm.dtype).removeprefix('torch.')}, torch threads {torch.get_num_threads()}")
    ar_s = None
    if "b" in args.only or "c" in args.only:
        _, ar_s, _ = bench_ar(lm, args.ar_tokens)
    if "c" in args.only:
        bench_block8(lm, args.ar_tokens, ar_s, 0.9)
    if "a" in args.only:
        if args.layers:
            lm.model.model.layers = torch.nn.ModuleList(list(lm.model.model.layers)[: args.layers])
            lm.model.config = lm.model.config.replace(num_layers=args.layers)
        print(f"  (a) model: default weights, {lm.model.config.num_layers} layers, block {args.block}, "
              f"{args.steps} steps/block, BlockRefinementScheduler threshold {args.threshold}")
        bench_pipeline(lm, args.lengths, args.block, args.steps, args.threshold)


if __name__ == "__main__":
    main()
