"""Cost per generated token as a document grows: the bounded context (window + summaries + retrieval) should keep it
flat. Writes one long report and prints ms per generated token for the blocks around each checkpoint length,
next to the first blocks' cost (the ratio is the result).

Usage: python benchmarks/doc_scaling.py [--model default] [--tokens 1000 5000 20000]
"""

from __future__ import annotations

import argparse
import tempfile

import blockgen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--tokens-per-word", type=float, default=1.4)
    args = parser.parse_args()
    lm = blockgen.load(args.model)
    marks = sorted(args.tokens)
    words = int(marks[-1] / args.tokens_per_word) + 200
    seen = []  # (document tokens after the block, ms per token of the block, prompt tokens)

    def on_event(event):
        if event.kind == "block":
            doc_tokens = (seen[-1][0] if seen else 0) + int(event.block_words * args.tokens_per_word)
            ms = 1000.0 / event.tokens_per_second if event.tokens_per_second else 0.0
            seen.append((doc_tokens, ms, event.context["prompt_tokens"]))

    with tempfile.TemporaryDirectory() as out:
        blockgen.write_report("the history of navigation at sea", words=words, out=out, model=lm, on_event=on_event)
    first = [ms for _, ms, _ in seen[:3]]
    base = sum(first) / len(first)
    print(f"first blocks: {base:.1f} ms/token")
    for mark in marks:
        near = [(ms, p) for t, ms, p in seen if abs(t - mark) <= max(300, mark * 0.1)]
        if not near:
            print(f"{mark:6d} tokens: no block near this length")
            continue
        ms = sum(m for m, _ in near) / len(near)
        prompt = sum(p for _, p in near) / len(near)
        print(f"{mark:6d} tokens: {ms:6.1f} ms/token ({ms / base:.2f}x the first blocks), context {prompt:.0f} tokens")


if __name__ == "__main__":
    main()
