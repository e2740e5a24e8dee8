"""Cost per generated token as a document grows: the bounded context (window + summaries + retrieval) should keep it
flat. For each document length L, a saved state holding L tokens of earlier text is resumed and the writer's next
paragraphs are timed; ms per generated token is printed next to the cost at an empty document (the ratio is the
result).

The earlier text is real model output: a short warm-up report is written first and its paragraphs (with their
summaries) are repeated until the state holds L tokens. What a paragraph costs depends only on the state it starts
from (memory, summaries, window, retrieval), so this measures what a writer that had reached L tokens would pay,
without first generating L tokens.

Usage: python benchmarks/doc_scaling.py [--model default] [--tokens 1000 5000 20000] [--paragraphs 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import blockgen
from blockgen.document import Document
from blockgen.document.state import Request
from blockgen.document.writer import STATE_FILE, Writer, WriterConfig
from blockgen.planners import Outline, with_latent

TOPIC = "the history of navigation at sea"


def _state(lm, config: WriterConfig, pool: list, tokens: int, tail_words: int, out: Path) -> Request:
    """A saved, resumable state with about `tokens` tokens of earlier text in its first section."""
    paragraphs, total = [], 0
    while total < tokens:
        paragraph = pool[len(paragraphs) % len(pool)].model_copy(update={"section": 0})
        paragraphs.append(paragraph)
        total += paragraph.tokens
    sections = [{"heading": "The open ocean", "goal": "How sailors crossed open water.", "words": tail_words}]
    if paragraphs:
        sections.insert(0, {"heading": "Coasts and stars", "goal": "Early navigation by landmarks and stars.",
                            "words": sum(p.words for p in paragraphs)})
    outline = with_latent(Outline(title="Navigation at sea", sections=sections))
    request = Request(kind="report", prompt=TOPIC, words=outline.words, model=lm.name, settings=config.model_dump(mode="json"))
    doc = Document.start(request, outline).model_copy(update={"paragraphs": paragraphs})
    doc.save(out / STATE_FILE)
    return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--paragraphs", type=int, default=2, help="paragraphs timed at each length")
    args = parser.parse_args()
    lm = blockgen.load(args.model)
    config = WriterConfig(planner="template")
    with tempfile.TemporaryDirectory() as tmp:
        warm = blockgen.write_report(TOPIC, words=400, out=Path(tmp) / "warm", model=lm, planner="template")
        pool = warm.paragraphs
        tail = config.paragraph_words * args.paragraphs
        rows = []
        for mark in [0] + sorted(args.tokens):
            out = Path(tmp) / f"at-{mark}"
            out.mkdir()
            request = _state(lm, config, pool, mark, tail, out)
            timed = []

            def on_event(event, timed=timed):
                if event.kind == "paragraph" and event.tokens_per_second:
                    timed.append((1000.0 / event.tokens_per_second, event.context["prompt_tokens"]))

            Writer(lm, config).write(request, out, resume=True, on_event=on_event)
            ms = statistics.mean(m for m, _ in timed[: args.paragraphs])
            prompt = statistics.mean(p for _, p in timed[: args.paragraphs])
            rows.append((mark, ms, prompt))
    base = rows[0][1]
    print(f"{lm.name} on {lm.device}; {args.paragraphs} paragraphs timed per length")
    for mark, ms, prompt in rows:
        print(f"{mark:6d} tokens before: {ms:6.1f} ms/token ({ms / base:.2f}x the empty document), "
              f"context {prompt:.0f} tokens")


if __name__ == "__main__":
    main()
