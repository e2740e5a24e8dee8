"""Exports of a Document: Markdown, a standalone HTML page (model text escaped), JSON."""

from __future__ import annotations

import html
from pathlib import Path

from blockgen.document.state import Document

_CSS = (
    "body{max-width:46rem;margin:3rem auto;padding:0 1rem;font:17px/1.6 Georgia,serif;color:#222}"
    "h1{font-size:2rem}h2{margin-top:2.2rem}figure{margin:1.5rem 0}figure img{max-width:100%}"
    "figcaption{font-size:.9rem;color:#555}"
)


def _layout(doc: Document, section: int):
    """The section's paragraphs and images in reading order: an image after paragraph n follows it (0: before the
    text); a slot past the last paragraph lands at the section's end."""
    paragraphs = [p.strip() for w in doc.section_paragraphs(section) for p in w.text.split("\n\n") if p.strip()]
    images = sorted((im for im in doc.images if im.section == section), key=lambda im: im.after_paragraph)
    for n in range(len(paragraphs) + 1):
        for image in images:
            if image.after_paragraph == n or (n == len(paragraphs) and image.after_paragraph > n):
                yield "image", image
        if n < len(paragraphs):
            yield "paragraph", paragraphs[n]


def to_markdown(doc: Document) -> str:
    lines = [f"# {doc.outline.title}", ""]
    for i, section in enumerate(doc.outline.sections):
        lines += [f"## {section.heading}", ""]
        for kind, item in _layout(doc, i):
            if kind == "paragraph":
                lines += [item, ""]
            else:
                alt = item.caption.replace("]", "").replace("\n", " ")
                lines += [f"![{alt}]({item.path})", f"*{item.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def to_html(doc: Document) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(doc.outline.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(doc.outline.title)}</h1>",
    ]
    for i, section in enumerate(doc.outline.sections):
        parts.append(f"<h2>{esc(section.heading)}</h2>")
        for kind, item in _layout(doc, i):
            if kind == "paragraph":
                parts.append(f"<p>{esc(item)}</p>")
            else:
                parts.append(f'<figure><img src="{esc(item.path)}" alt="{esc(item.caption)}">'
                             f"<figcaption>{esc(item.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def export_all(doc: Document, out_dir: str | Path, stem: str = "document") -> dict[str, Path]:
    """Write document.md, document.html and document.json into out_dir."""
    out_dir = Path(out_dir)
    paths = {"markdown": out_dir / f"{stem}.md", "html": out_dir / f"{stem}.html", "json": out_dir / f"{stem}.json"}
    paths["markdown"].write_text(to_markdown(doc), encoding="utf-8")
    paths["html"].write_text(to_html(doc), encoding="utf-8")
    paths["json"].write_text(doc.model_dump_json(indent=1), encoding="utf-8")
    return paths
