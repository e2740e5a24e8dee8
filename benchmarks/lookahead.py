"""How far ahead adapted models see, side by side on the same held-out text: the base's greedy answers to the
held-out prompts of default_model.py, scored by blockgen.adapt.lookahead for each model given.

Per model and offset ahead of a block's next position (1 = the next one): the share of positions whose most likely
token is the base's, the share confident above the threshold, and the share right among those; and an estimate of
tokens per forward, 1 + the confident shares of offsets 2 and up (a threshold decode commits the next position and
every other one it is sure of; on the model's own samples the measured figure runs lower); for a gated drafting
adapter, 1 + the mean run of drafts right and confident from offset 2 on (what its loop keeps a forward while it
has drafts at hand). Greedy reference text
makes it deterministic, so it moves with training long before tokens per forward on a few sampled prompts does.

Usage: python benchmarks/lookahead.py ADAPTER [ADAPTER ...] [--base default-ar] [--prompts 12] [--tokens 160]
                                      [--threshold 0.9] [--offsets 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import blockgen
from blockgen.adapt.lookahead import draft_runs, lookahead

sys.path.insert(0, str(Path(__file__).parent))
from default_model import PROMPTS  # noqa: E402  (the held-out prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="adapter or checkpoint directories (block-causal, with a mask)")
    parser.add_argument("--base", default="default-ar", help="the AR model whose greedy answers are the reference")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--offsets", type=int, default=5, help="offsets printed (all go to --json)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    base = blockgen.load(args.base, dtype="float32", quantize=None)
    texts = []
    for prompt in PROMPTS[: args.prompts]:
        ids = base.encode(prompt, chat=True)
        texts.append((ids, list(base.generate_results(ids, max_new_tokens=args.tokens, temperature=0.0)[0].tokens)))
    del base
    print(f"{len(texts)} held-out prompts, the base's greedy answers ({sum(len(c) for _, c in texts):,} tokens); "
          f"per offset: right / confident (> {args.threshold}) / right among confident")
    found = {}
    for name in args.models:
        lm = blockgen.load(name, dtype="float32", quantize=None)
        rows = lookahead(lm, texts, threshold=args.threshold)
        estimate = 1 + sum(o.confident for o in rows if o.offset > 1)
        found[name] = {"offsets": [o.as_dict() for o in rows], "tokens_per_forward_estimate": estimate}
        if lm.family.gated:  # drafts are kept while right and sure: 1 + the mean run (when drafts are at hand)
            runs = draft_runs(lm, texts, threshold=args.threshold)
            estimate = 1 + sum(run * share for run, share in runs.items())
            found[name] |= {"draft_runs": runs, "tokens_per_forward_estimate": estimate}
        cells = "  ".join(f"{o.offset}: {o.right:.3f} / {o.confident:.3f} / {o.confident_right:.2f}"
                          for o in rows[: args.offsets])
        print(f"{name}\n  {cells}\n  estimated tokens/forward {estimate:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "models": found},
                                        indent=2))


if __name__ == "__main__":
    main()
