"""Document quality on a fixed prompt set: LongWriter's length score, distinct-4, repeated paragraphs, plan adherence.

Usage: python benchmarks/doc_quality.py [--model default] [--max-words N] [--only K] [--out DIR]
--max-words caps every request (the full set asks 300 to 5,000 words; on a 2-core CPU the default model writes
about 9 tokens/s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import blockgen
from blockgen.document.metrics import document_quality

PROMPTS = [
    ("report", "how tides work", 300),
    ("story", "a lighthouse keeper's daughter relights the lamp in a storm", 500),
    ("report", "the history of the printing press and its effects on Europe", 1000),
    ("story", "two rival bakers in a mountain village must cook together for a wedding", 1500),
    ("report", "how vaccines train the immune system", 2500),
    ("story", "a cartographer discovers that her maps change the land they describe", 5000),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-words", type=int, default=None)
    parser.add_argument("--only", type=int, default=None, help="run the first K prompts")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lm = blockgen.load(args.model)
    rows = []
    out_root = args.out or tempfile.mkdtemp(prefix="doc-quality-")
    for n, (kind, prompt, words) in enumerate(PROMPTS[: args.only]):
        words = min(words, args.max_words or words)
        write = blockgen.write_report if kind == "report" else blockgen.write_story
        start = time.perf_counter()
        doc = write(prompt, words=words, out=f"{out_root}/{n:02d}-{kind}", model=lm)
        q = document_quality(doc)
        q["seconds"] = time.perf_counter() - start
        rows.append(q)
        print(f"{kind:6s} {words:5d} words asked, {q['words']:5d} written | S_l {q['length_score']:5.1f} | "
              f"distinct-4 {q['distinct_4']:.3f} | repeated paragraphs {q['repeated_paragraphs']} | "
              f"plan adherence {q['plan_adherence']:.2f} | {q['seconds']:.0f}s", flush=True)
    print(f"mean over {len(rows)}: S_l {statistics.mean(r['length_score'] for r in rows):.1f}, "
          f"distinct-4 {statistics.mean(r['distinct_4'] for r in rows):.3f}, "
          f"repeated paragraphs {sum(r['repeated_paragraphs'] for r in rows)}, "
          f"plan adherence {statistics.mean(r['plan_adherence'] for r in rows):.2f}  (documents in {out_root})")


if __name__ == "__main__":
    main()
