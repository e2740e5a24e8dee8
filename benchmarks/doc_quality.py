"""Document quality: the writer against a plain per-section baseline, same model, prompts, plans and seeds.

The baseline plans with the same word budgets (the template planner), then asks the model once per section, with no
memory: "Write the '<heading>' section of a short <kind> titled '<title>'. One paragraph of about <N> words." (chat
template, temperature 0.7, top-p 0.9). The writer writes the same requests with its defaults.

Per document and on average, for each pipeline: LongWriter's length score S_l, the judge's perplexity (the model's own
perplexity of each paragraph as plain text, median), the share of sentences over 60 words, fragments, meta or
assistant phrases per 1,000 words, repeated 8-grams across the document, distinct-4, plan adherence, and seconds per
1,000 words; then the writer's figures as ratios of the baseline's and the targets.

Usage: python benchmarks/doc_quality.py [--model default] [--only K] [--max-words N] [--out DIR] [--json FILE]
                                        [writer options as key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

import blockgen
from blockgen.document.metrics import quality
from blockgen.planners import template_outline, with_latent

PROMPTS = [
    ("report", "how tides work", 800),
    ("story", "a lighthouse keeper's daughter relights the lamp in a storm", 600),
    ("report", "the history of the printing press and its effects on Europe", 1000),
    ("story", "two rival bakers in a mountain village must cook together for a wedding", 1200),
    ("report", "how vaccines train the immune system", 1500),
    ("story", "a cartographer discovers that her maps change the land they describe", 300),
]
COLUMNS = [("length_score", "S_l", "{:5.1f}"), ("judge_ppl", "judge ppl", "{:7.2f}"), ("run_on", ">60w", "{:5.1%}"),
           ("fragments", "frag", "{:4d}"), ("meta_per_1k", "meta/1k", "{:6.2f}"),
           ("repeated_8grams", "rep 8g", "{:6.1%}"), ("distinct_4", "dist-4", "{:6.3f}"),
           ("looping", "loops", "{:5.1%}"),
           ("plan_adherence", "plan", "{:4.2f}"), ("s_per_1k", "s/1k w", "{:6.0f}")]


def baseline(lm, kind: str, prompt: str, words: int, seed: int, out: Path, judge) -> tuple[dict, str]:
    """The plain pipeline: template plan, one chat prompt per section, no memory."""
    outline = with_latent(template_outline(prompt, words, kind))
    start = time.perf_counter()
    sections, paragraphs = [], []
    for i, section in enumerate(outline.sections):
        ask = (f"Write the '{section.heading}' section of a short {kind} titled '{outline.title}'. One paragraph of "
               f"about {section.words} words.")
        result = lm.generate_results(ask, chat=True, max_new_tokens=math.ceil(section.words * 1.6) + 16,
                                     temperature=0.7, top_p=0.9, seed=seed * 1000 + i)[0]
        parts = [p.strip() for p in result.text.split("\n\n") if p.strip()]
        sections.append(" ".join(parts))
        paragraphs += parts
    seconds = time.perf_counter() - start
    q = quality(paragraphs, sections, torch.tensor(outline.latent)[1:], words, judge=judge)
    text = f"# {outline.title}\n\n" + "\n\n".join(f"## {s.heading}\n\n{t}" for s, t in zip(outline.sections, sections))
    (out / "baseline.md").write_text(text + "\n")
    return q | {"seconds": seconds}, text


def writer(lm, kind: str, prompt: str, words: int, seed: int, out: Path, options: dict, judge) -> tuple[dict, str]:
    from blockgen.document.metrics import document_quality

    write = blockgen.write_report if kind == "report" else blockgen.write_story
    start = time.perf_counter()
    doc = write(prompt, words=words, out=out / "writer", model=lm, seed=seed, planner="template", **options)
    seconds = time.perf_counter() - start
    return document_quality(doc, judge=judge) | {"seconds": seconds}, (out / "writer" / "document.md").read_text()


def _row(label: str, q: dict) -> str:
    q = dict(q, s_per_1k=1000 * q["seconds"] / max(1, q["words"]))
    cells = []
    for key, _, fmt in COLUMNS:
        value = q[key]
        cells.append("    n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value))
    return f"{label:28s} " + " ".join(cells)


def _mean(rows: list[dict]) -> dict:
    keys = [k for k, _, _ in COLUMNS if k != "s_per_1k"] + ["seconds", "words"]
    mean = {k: statistics.mean(r[k] for r in rows) for k in keys if k not in ("fragments",)}
    mean["fragments"] = sum(r["fragments"] for r in rows)
    mean["judge_ppl"] = statistics.median(r["judge_ppl"] for r in rows)
    return mean


def _option(text: str):
    key, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--only", type=int, help="run the first K prompts")
    parser.add_argument("--pick", type=int, nargs="+", help="run these prompts (indices)")
    parser.add_argument("--max-words", type=int)
    parser.add_argument("--out", help="where the documents go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--dtype", default="auto", help="of the model that writes (the judge is always float32)")
    parser.add_argument("--quantize", choices=["auto", "int8", "int4", "none"], default="auto", help="of the model that writes")
    parser.add_argument("options", nargs="*", help="writer options, key=value (e.g. candidates=1)")
    args = parser.parse_args()
    options = dict(_option(o) for o in args.options)
    lm = blockgen.load(args.model, dtype=args.dtype, quantize=None if args.quantize == "none" else args.quantize)
    # one fixed judge, whatever the writing model's dtype or quantization, so figures compare across them
    judge = blockgen.load(args.model, dtype="float32", quantize=None)
    out_root = Path(args.out or tempfile.mkdtemp(prefix="doc-quality-"))
    picked = args.pick if args.pick else list(range(len(PROMPTS)))[: args.only]
    header = f"{'document':28s} " + " ".join(f"{name:>{len(fmt.format(0 if 'd' in fmt else 0.0))}s}"
                                               for _, name, fmt in COLUMNS)
    print(f"{lm.name} on {lm.device} {str(lm.dtype).removeprefix('torch.')}{' ' + lm.quantize if lm.quantize else ''} (judge "
          f"float32); writer options {options or 'default'}; documents in {out_root}\n{header}")
    results = {"baseline": [], "writer": []}
    for n in picked:
        kind, prompt, words = PROMPTS[n]
        words = min(words, args.max_words or words)
        out = out_root / f"{n:02d}-{kind}"
        out.mkdir(parents=True, exist_ok=True)
        label = f"{kind} {words}: {prompt[:14]}"
        if not args.no_baseline:
            q, _ = baseline(lm, kind, prompt, words, n, out, judge)
            results["baseline"].append(q)
            print(_row(f"{label} | plain", q), flush=True)
        q, _ = writer(lm, kind, prompt, words, n, out, options, judge)
        results["writer"].append(q)
        print(_row(f"{label} | writer", q), flush=True)
    print(header)
    means = {name: _mean(rows) for name, rows in results.items() if rows}
    for name, mean in means.items():
        print(_row(f"mean: {name}", mean))
    if "baseline" in means:
        b, w = means["baseline"], means["writer"]
        print(f"writer / plain: judge ppl {w['judge_ppl'] / b['judge_ppl']:.2f}x (target <= 1.3), repeated 8-grams "
              f"{w['repeated_8grams'] / max(b['repeated_8grams'], 1e-9):.2f}x (target <= 0.5), seconds per 1k words "
              f"{(w['seconds'] / w['words']) / (b['seconds'] / b['words']):.2f}x")
    w = means["writer"]
    print(f"writer targets: run-on {w['run_on']:.1%} (<= 2%), fragments {w['fragments']} (0), meta/1k "
          f"{w['meta_per_1k']:.2f} (0), plan adherence {w['plan_adherence']:.2f} (>= 0.8), S_l {w['length_score']:.1f} "
          f"(>= 95), {1000 * w['seconds'] / w['words']:.0f} s per 1k words (<= 160 on 2 cores)")
    if args.json:
        args.json.write_text(json.dumps({"options": options, "prompts": [PROMPTS[n] for n in picked],
                                         "results": results, "means": means}, indent=2))


if __name__ == "__main__":
    main()
