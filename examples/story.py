"""Write a short story from a premise and a hand-written outline (Markdown), with latent steering on.

Usage: python examples/story.py [out_dir] [words]
"""

import sys
import tempfile
from pathlib import Path

import blockgen
from blockgen.planners import load_outline, rebudget

OUTLINE = """# The Lamp at Port Elly

## The storm warning (200 words)
Mara, the lighthouse keeper's daughter, hears that a storm is coming.
- the radio crackles with the warning
- the fishing fleet is still at sea

## The dark tower (250 words)
The lamp fails and Mara must climb the tower.
- the stairs in the dark
- she finds the broken mechanism

## Light (150 words)
Mara relights the lamp and the boats come home.
"""


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "story-out")
    words = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    with tempfile.TemporaryDirectory() as tmp:  # the outline as a user would keep it: a Markdown file
        path = Path(tmp) / "outline.md"
        path.write_text(OUTLINE)
        plan = rebudget(load_outline(path, kind="story"), words)  # the outline's proportions, at the length asked
    doc = blockgen.write_story("a lighthouse keeper's daughter relights the lamp in a storm", words=words, out=out,
                               outline=plan, candidates=2, seed=1)
    for i, section in enumerate(doc.outline.sections):
        print(f"## {section.heading}: {doc.section_words(i)}/{section.words} words")
    print(f"\nentities and text in {out}/document.md, {out}/document.html")


if __name__ == "__main__":
    main()
