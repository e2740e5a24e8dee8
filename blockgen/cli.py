"""The `blockgen` command."""

from __future__ import annotations

import argparse
import sys

from blockgen.errors import BlockgenError
from blockgen.flags import add_flags, given


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', a checkpoint directory or a .gguf file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    parser.add_argument("--quantize", choices=["auto", "int8", "int4", "none"], default="auto",
                        help="CPU: weight-only int8 linear layers (auto: with bfloat16 on CPU)")
    parser.add_argument("--pack", choices=["auto", "off"], default="auto",
                        help="CPU, float32: linear layers packed for oneDNN's matmul (exact, faster; auto: on)")


def _load(args: argparse.Namespace):
    """The model named by the common options (_add_model_options)."""
    from blockgen.runtime import load

    return load(args.model, device=args.device, dtype=args.dtype,
                quantize=None if args.quantize == "none" else args.quantize,
                pack=False if args.pack == "off" else None)


def _generate(args: argparse.Namespace) -> int:
    lm = _load(args)
    chat = not args.raw and lm.has_chat_template
    final = None
    for chunk in lm.stream(args.prompt, chat=chat, **given(args, args.option_names)):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        if chunk.finish_reason is not None:
            final = chunk
    print()
    stats = final.stats
    print(
        f"[{lm.name} on {lm.device} {str(lm.dtype).removeprefix('torch.')}: loaded in {lm.load_seconds:.1f}s; "
        f"{stats.generated_tokens} tokens in {stats.seconds:.1f}s ({stats.tokens_per_second:.1f} tokens/s), "
        f"{stats.forward_passes} forward passes ({stats.tokens_per_forward:.2f} tokens/forward), "
        f"finish: {final.finish_reason}]",
        file=sys.stderr,
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    lm = _load(args)
    cfg, fam = lm.config, lm.family
    params = lm.parameters
    print(f"model:      {lm.name} ({lm.path})")
    print(f"arch:       {cfg.architecture} ({cfg.model_type}), {params / 1e6:.1f}M parameters, "
          f"{cfg.num_layers} layers, {cfg.num_heads}/{cfg.num_kv_heads} heads of {cfg.head_dim}")
    print(f"context:    {lm.context_limit} trained, rope theta {cfg.rope_theta:g}")
    print(f"diffusion:  attention={fam.attention.value} logit_shift={fam.logit_shift} "
          f"mask_token_id={fam.mask_token_id} block_size={fam.block_size}")
    print(f"device:     {lm.device} {str(lm.dtype).removeprefix('torch.')}"
          f"{', int8 weights' if lm.quantize == 'int8' else ''}, loaded in {lm.load_seconds:.2f}s")
    if lm.device.type == "cpu":
        import os

        import torch

        from blockgen.runtime import DTYPE_ENV, auto_dtype, cpu_bf16

        native = cpu_bf16()
        why = f"{DTYPE_ENV}={os.environ[DTYPE_ENV]}" if os.environ.get(DTYPE_ENV) else (
            f"native bfloat16 ({native})" if native else "no native bfloat16 on this CPU")
        print(f"cpu:        {torch.get_num_threads()} threads; dtype auto -> {str(auto_dtype(lm.device)).removeprefix('torch.')} "
              f"({why}); --dtype overrides; weights: {lm.quantize or ('packed for oneDNN' if lm.packed else 'plain')}"
              " (--quantize auto|int8|int4|none, --pack auto|off)")
    return 0


def _write(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from blockgen.api import check_request, write_report, write_story

    console = Console(stderr=True)
    options = given(args, args.option_names)
    check_request(args.kind, args.prompt, args.words, **options)  # a bad request fails before the model loads
    lm = _load(args)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("words"),
               TextColumn("{task.fields[speed]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("planning", total=args.words, speed="")

        def on_event(event):
            if event.kind == "plan":
                progress.update(task, description=f"{args.kind}: {event.heading[:40]}", completed=event.words)
                plan = event.context or {}
                if plan.get("repairs"):
                    progress.console.print(f"outline drafted by the {plan['source']}; {len(plan['repairs'])} parts "
                                           "repaired (listed in state.json under outline.repairs)")
            elif event.kind == "image":
                progress.console.print(f"image {event.context['path']} ({event.context['seconds']:.1f}s)")
            elif event.kind == "paragraph":
                progress.update(task, description=f"section {event.section + 1}: {event.heading[:30]}",
                                completed=min(event.words, args.words),
                                speed=f"{event.tokens_per_second:.1f} tok/s")

        write = write_report if args.kind == "report" else write_story
        doc = write(args.prompt, words=args.words, out=args.out, model=lm, outline=args.outline, resume=args.resume,
                    seed=args.seed, on_event=on_event, image_model=args.image_model, **options)
    stats = doc.stats()
    images = f"{len(doc.images)} images (in {args.out}/images), " if doc.images else ""
    console.print(
        f"[bold]{doc.outline.title}[/bold]: {stats['words']} words (asked {args.words}) in "
        f"{len(doc.outline.sections)} sections, {stats['paragraphs']} paragraphs, {stats['tokens_per_forward']:.2f} "
        f"tokens/forward, {stats['tokens_per_second']:.1f} tokens/s\n"
        f"{images}written to {args.out}/document.md, document.html, document.json (state: {args.out}/state.json)"
    )
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from blockgen.adapt import AdaptConfig, adapt

    options = given(args, args.option_names)
    if args.full:
        options["lora_rank"] = None
    config = AdaptConfig.build(base=args.base, **options)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def on_progress(p):
            if p.phase not in tasks:
                label = "distilling" if p.phase == "distill" else "training"
                tasks[p.phase] = progress.add_task(label, total=p.total, info="")
            info = ""
            if p.loss is not None:
                info = f"loss {p.loss:.3f}  block {p.block_size}  {p.tokens_per_second or 0:,.0f} tok/s  lr {p.lr:.1e}"
            progress.update(tasks[p.phase], completed=p.done, info=info)

        result = adapt(config, args.out, resume=args.resume, stop_after=args.stop_after, max_minutes=args.max_minutes,
                       on_progress=on_progress)
    state = "finished" if result.finished else "stopped (continue with --resume)"
    loss = f"{result.loss:.3f}" if result.loss is not None else "n/a"
    console.print(f"{state}: step {result.step}/{result.steps}, {result.tokens_seen:,} tokens seen, loss {loss}, "
                  f"{result.seconds:.0f}s; load it with blockgen.load({str(result.out)!r})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from blockgen.errors import InvalidArgumentError

    try:
        from blockgen.serve import run
    except ImportError as exc:
        raise InvalidArgumentError("serve", exc.name, "the server needs its extra: pip install "
                                   "'blockgen-diffusion[serve]'") from None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"blockgen: warning: serving on {args.host} without --api-key: anyone who can reach it may use it",
              file=sys.stderr)
    lm = _load(args)
    print(f"blockgen: serving {lm.name} as {args.served_name or lm.name!r} on http://{args.host}:{args.port}/v1 "
          f"(loaded in {lm.load_seconds:.1f}s; document jobs in {args.jobs_dir})", file=sys.stderr)
    run(lm, host=args.host, port=args.port, model_name=args.served_name, api_key=args.api_key,
        jobs_dir=args.jobs_dir, max_batch=args.max_batch, image_model=args.image_model, log_level=args.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every option flag comes from its options model (GenerationConfig, WriterConfig, AdaptConfig): declared there
    once, with its type, choices, default and description."""
    from blockgen.adapt import AdaptConfig
    from blockgen.document.writer import PER_PARAGRAPH, WRITER_GENERATION, WriterConfig
    from blockgen.engine import GenerationConfig

    parser = argparse.ArgumentParser(prog="blockgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate text for a prompt, streamed as it is committed")
    gen.add_argument("prompt")
    gen.add_argument("--raw", action="store_true", help="do not wrap the prompt in the chat template")
    gen.set_defaults(option_names=add_flags(gen, GenerationConfig))
    _add_model_options(gen)
    gen.set_defaults(run=_generate)
    write = sub.add_parser("write", help="plan and write a long report or story")
    write.add_argument("kind", choices=["report", "story"])
    write.add_argument("prompt", help="the topic (report) or premise (story)")
    write.add_argument("--words", type=int, default=1500)
    write.add_argument("--out", default="blockgen-output", help="output directory")
    write.add_argument("--resume", action="store_true", help="continue a stopped run from OUT/state.json")
    write.add_argument("--outline", help="outline file (.json, .yaml, .md) instead of a drafted plan")
    write.add_argument("--seed", type=int, default=0, help="the document's seed (default: 0)")
    write.add_argument("--image-model", help="a local diffusers text-to-image pipeline directory")
    write.set_defaults(option_names=add_flags(write, WriterConfig, exclude={"generation"})
                       + add_flags(write, GenerationConfig, exclude=PER_PARAGRAPH, defaults=WRITER_GENERATION))
    _add_model_options(write)
    write.set_defaults(run=_write)
    ad = sub.add_parser("adapt", help="turn a causal LM into a block-diffusion model (LoRA or full fine-tuning)")
    ad.add_argument("base", nargs="?", default="default", help="'default', a checkpoint directory or a .gguf file")
    ad.add_argument("--out", required=True, help="run directory: the adapter (or checkpoint) and training state")
    ad.set_defaults(option_names=add_flags(ad, AdaptConfig, exclude={"base"}))
    ad.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    ad.add_argument("--resume", action="store_true", help="continue the run in --out")
    ad.add_argument("--stop-after", type=int, help="stop this invocation after N steps (checkpointed)")
    ad.add_argument("--max-minutes", type=float, help="stop this invocation after this long (checkpointed)")
    ad.set_defaults(run=_adapt)
    srv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, document jobs)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1")
    srv.add_argument("--served-name", help="the model id clients ask for (default: the --model value)")
    srv.add_argument("--jobs-dir", default="blockgen-jobs", help="where document jobs live; unfinished ones resume "
                     "at start (default: blockgen-jobs)")
    srv.add_argument("--max-batch", type=int, default=32, help="rows decoded together at most (default: 32)")
    srv.add_argument("--image-model", help="a local diffusers text-to-image pipeline directory for documents")
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_model_options(srv)
    srv.set_defaults(run=_serve)
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
