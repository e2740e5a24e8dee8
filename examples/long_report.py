"""Write a long report with the embedded default model, printing progress as paragraphs are written.

Usage: python examples/long_report.py ["topic"] [words] [out_dir]
Stop it at any time and run it again with --resume as a fourth argument to continue where it stopped.
"""

import sys

import blockgen


def main() -> None:
    topic = sys.argv[1] if len(sys.argv) > 1 else "how tides work"
    words = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    out = sys.argv[3] if len(sys.argv) > 3 else "report-out"
    resume = len(sys.argv) > 4 and sys.argv[4] == "--resume"

    def progress(event):
        if event.kind == "paragraph":
            print(f"[{event.words:5d}/{event.target} words] {event.heading}: +{event.paragraph_words} words "
                  f"({event.tokens_per_second:.1f} tokens/s)", flush=True)

    doc = blockgen.write_report(topic, words=words, out=out, resume=resume, on_event=progress)
    print(f"\n{doc.outline.title}: {doc.words} words, stats {doc.stats()}")
    print(f"Markdown: {out}/document.md  HTML: {out}/document.html")


if __name__ == "__main__":
    main()
