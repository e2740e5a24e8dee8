"""The `blockgen` command."""

from __future__ import annotations

import argparse
import sys
import time

from blockgen.errors import BlockgenError


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', a checkpoint directory or a .gguf file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")


def _generate(args: argparse.Namespace) -> int:
    from blockgen.runtime import load

    lm = load(args.model, device=args.device, dtype=args.dtype)
    chat = not args.raw and bool(getattr(lm.tokenizer, "chat_template", None))
    start = time.perf_counter()
    text = lm.generate(args.prompt, max_new_tokens=args.max_new_tokens, chat=chat)
    seconds = time.perf_counter() - start
    print(text)
    tokens = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    print(
        f"[{lm.name} on {lm.device} {str(lm.dtype).removeprefix('torch.')}: loaded in {lm.load_seconds:.1f}s, "
        f"{tokens} tokens in {seconds:.1f}s]",
        file=sys.stderr,
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from blockgen.runtime import load

    lm = load(args.model, device=args.device, dtype=args.dtype)
    cfg, fam = lm.config, lm.family
    params = sum(p.numel() for p in lm.model.parameters())
    print(f"model:      {lm.name} ({lm.path})")
    print(f"arch:       {cfg.architecture} ({cfg.model_type}), {params / 1e6:.1f}M parameters, "
          f"{cfg.num_layers} layers, {cfg.num_heads}/{cfg.num_kv_heads} heads of {cfg.head_dim}")
    print(f"context:    {cfg.max_position_embeddings} trained, rope theta {cfg.rope_theta:g}")
    print(f"diffusion:  attention={fam.attention.value} logit_shift={fam.logit_shift} "
          f"mask_token_id={fam.mask_token_id} block_size={fam.block_size}")
    print(f"device:     {lm.device} {str(lm.dtype).removeprefix('torch.')}, loaded in {lm.load_seconds:.2f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="continue a prompt")
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--raw", action="store_true", help="do not wrap the prompt in the chat template")
    _add_model_options(gen)
    gen.set_defaults(run=_generate)
    info = sub.add_parser("info", help="load a model and describe it")
    _add_model_options(info)
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BlockgenError as exc:
        print(f"blockgen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
