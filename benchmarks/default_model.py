"""The adapted default vs the AR mode of its base, side by side in one run, on a fixed prompt set.

Rows: the base in AR mode (block size 1, one token per forward), then the adapted model at each --blocks size with a
threshold scheduler (a gated drafting adapter: its drafting loop, --blocks masks a block, --draft-threshold). Per
row: tokens committed per forward, tokens/s and its ratio to the AR row, the AR judge's
perplexity (the base model scoring each output given its prompt) and its ratio to the AR row's, and distinct-4.
Both sample at the same temperature and seeds. Then the lookahead table (blockgen.adapt.lookahead) on the AR row's
answers: per offset ahead of a block's next position, how often the adapted model is right and sure (what tokens per
forward follows, steadier than it on a few prompts). The gates of the adaptation recipe are checked at the end:
  tokens/forward >= 2.0 at block 8; judge perplexity <= 1.25x AR; tokens/s >= 2x AR on GPU, >= 1.5x on CPU.

Usage: python benchmarks/default_model.py [--model default] [--base default-ar] [--prompts 8] [--max-new-tokens 128]
                                          [--blocks 4 8] [--threshold 0.9] [--temperature 0.7] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import blockgen
from blockgen.adapt.lookahead import draft_runs, lookahead
from blockgen.document.metrics import distinct_n

# Held out from the adaptation prompt set (other topics, other phrasings).
PROMPTS = (
    "Describe how a hydroelectric dam turns falling water into electricity.",
    "Write the opening of a mystery story set on a night train through the mountains.",
    "Explain why the sky is blue, for a high-school student.",
    "List the main steps of planting a vegetable garden in spring.",
    "Write a short dialogue between a chef and an apprentice about making soup.",
    "Summarise the causes and effects of the French Revolution in one paragraph.",
    "Write a report paragraph on how satellites help forecast hurricanes.",
    "Tell a short story about a robot that learns to paint.",
    "Explain how a bicycle stays upright while it moves.",
    "Give practical advice for writing a clear scientific abstract.",
    "Describe the life cycle of a butterfly.",
    "Write a letter from a lighthouse keeper to her brother in the city.",
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def judge_nll(judge, prompt_ids: list[int], output: list[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of `output` given the prompt under the AR judge, and the token count."""
    if not output:
        return 0.0, 0
    ids = torch.tensor([prompt_ids + output], device=judge.device)
    logits = judge.model(ids)[0, len(prompt_ids) - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt_ids) :], reduction="sum")
    return float(nll), len(output)


def run_row(lm, judge, prompts, *, label, block, threshold, args) -> dict:
    tokens = forwards = 0
    seconds = nll = scored = 0.0
    texts, answers = [], []
    for i, prompt in enumerate(prompts):
        prompt_ids = lm.encode(prompt, chat=True)
        _sync(lm.device)
        start = time.perf_counter()
        result = lm.generate_results(prompt_ids, max_new_tokens=args.max_new_tokens, block_size=block,
                                     threshold=threshold, temperature=args.temperature, top_p=0.95, seed=1000 + i,
                                     **({"draft_threshold": args.draft_threshold} if lm.family.gated else {}))[0]
        _sync(lm.device)
        seconds += time.perf_counter() - start
        tokens += result.stats.generated_tokens
        forwards += result.stats.forward_passes
        total, count = judge_nll(judge, prompt_ids, result.tokens)
        nll, scored = nll + total, scored + count
        texts.append(result.text)
        answers.append((prompt_ids, list(result.tokens)))
    return {
        "row": label,
        "block": block,
        "tokens": tokens,
        "tokens_per_forward": tokens / max(1, forwards),
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "judge_ppl": math.exp(nll / scored) if scored else float("nan"),
        "distinct4": sum(distinct_n(t) for t in texts) / len(texts),
        "sample": texts[0][:160].replace("\n", " "),
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="the adapted model (an adapter directory or 'default')")
    parser.add_argument("--base", default="default-ar", help="its AR base: the AR-mode row and the judge")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--draft-threshold", type=float, default=None, help="a gated drafting adapter's proposal "
                        "threshold (default: the engine's)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--record", action="store_true", help="write the figures into the model's card and record")
    parser.add_argument("--json", type=Path, help="also write the rows and gates to this JSON file")
    args = parser.parse_args()

    base = blockgen.load(args.base, device=args.device)
    adapted = blockgen.load(args.model, device=args.device)
    if adapted.family.attention.value == "causal" and not adapted.family.gated:
        parser.error(f"{args.model} is a causal model: adapt it first (blockgen adapt) or pass an adapter directory")
    prompts = list(PROMPTS[: args.prompts])
    print(f"device {base.device} {str(base.dtype).removeprefix('torch.')}; {len(prompts)} prompts, "
          f"{args.max_new_tokens} new tokens, temperature {args.temperature}, threshold {args.threshold}")
    rows = [run_row(base, base, prompts, label="AR mode (base)", block=1, threshold=args.threshold, args=args)]
    kind = "drafting" if adapted.family.gated else "adapted"  # a gated adapter drafts; the base writes
    for block in args.blocks:
        rows.append(run_row(adapted, base, prompts, label=f"{kind}, block {block}", block=block,
                            threshold=args.threshold, args=args))
    ar = rows[0]
    print(f"{'row':22} {'tok/fwd':>8} {'tok/s':>8} {'x AR':>6} {'judge ppl':>10} {'x AR':>6} {'distinct-4':>10}")
    for r in rows:
        print(f"{r['row']:22} {r['tokens_per_forward']:8.2f} {r['tokens_per_second']:8.1f} "
              f"{r['tokens_per_second'] / ar['tokens_per_second']:6.2f} {r['judge_ppl']:10.2f} "
              f"{r['judge_ppl'] / ar['judge_ppl']:6.2f} {r['distinct4']:10.3f}")
    for r in rows:
        print(f"  {r['row']}: {r['sample']!r}")
    # how far ahead the adapted model sees on the base's own answers (what tokens per forward follows)
    answers = ar.pop("answers")
    seen = lookahead(adapted, answers, threshold=args.threshold)
    print(f"lookahead on the AR row's answers (block {adapted.family.block_size}): offset, positions, right, "
          f"confident (> {args.threshold}), right among confident")
    for o in seen:
        print(f"  {o.offset:2d} {o.positions:6d} {o.right:6.3f} {o.confident:6.3f} {o.confident_right:6.3f}")
    runs = draft_runs(adapted, answers, threshold=args.threshold) if adapted.family.gated else None
    if runs is not None:  # a gated adapter keeps the drafts the base agrees with: the run from offset 2 on
        print("drafts kept a forward (right and confident from offset 2 on), share of blocks: "
              + ", ".join(f"{run}: {share:.3f}" for run, share in runs.items()))
    for r in rows:
        r.pop("answers", None)
    speed_gate = 2.0 if base.device.type == "cuda" else 1.5
    largest = rows[-1]
    gates = [
        (f"tokens/forward >= 2.0 at block {largest['block']}", largest["tokens_per_forward"], 2.0, True),
        ("judge perplexity <= 1.25x AR", largest["judge_ppl"] / ar["judge_ppl"], 1.25, False),
        (f"tokens/s >= {speed_gate}x AR", largest["tokens_per_second"] / ar["tokens_per_second"], speed_gate, True),
    ]
    verdicts = []
    for name, value, bound, higher in gates:
        ok = value >= bound if higher else value <= bound
        verdicts.append({"gate": name, "value": value, "bound": bound, "met": ok})
        print(f"gate {name}: {value:.2f} -> {'met' if ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(base.device), "dtype": str(base.dtype), "settings": vars(args)
                                         | {"json": str(args.json)}, "rows": rows, "gates": verdicts,
                                         "lookahead": [o.as_dict() for o in seen], "draft_runs": runs}, indent=2))
    if args.record:
        record_metrics(adapted.path, rows, base.device, args)


def record_metrics(path: Path, rows: list[dict], device, args) -> None:
    """Store the figures in the adapted model's training record and re-render its model card."""
    from blockgen.adapt.card import write_card
    from blockgen.loading.adapter import ADAPTER_CONFIG

    ar = rows[0]
    metrics = {"measured on": f"{device.type}, {len(PROMPTS[: args.prompts])} held-out prompts, "
                              f"{args.max_new_tokens} new tokens, temperature {args.temperature}, "
                              f"threshold {args.threshold} (benchmarks/default_model.py)"}
    for r in rows:
        metrics[r["row"]] = (f"{r['tokens_per_forward']:.2f} tokens/forward, {r['tokens_per_second']:.1f} tokens/s "
                             f"({r['tokens_per_second'] / ar['tokens_per_second']:.2f}x AR), judge perplexity "
                             f"{r['judge_ppl']:.2f} ({r['judge_ppl'] / ar['judge_ppl']:.2f}x AR), distinct-4 "
                             f"{r['distinct4']:.3f}")
    adapter = path / ADAPTER_CONFIG
    file, key = (adapter, "training") if adapter.is_file() else (path / "config.json", "blockgen_training")
    raw = json.loads(file.read_text())
    raw[key]["metrics"] = metrics
    file.write_text(json.dumps(raw, indent=2))
    base = raw.get("base", raw[key].get("settings", {}).get("base", "?"))
    write_card(path, base, raw["blockgen"], raw[key])
    print(f"recorded in {file} and {path / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
