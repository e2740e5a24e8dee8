"""User-supplied outlines: JSON, YAML, or a Markdown heading list.

Markdown: `# Title`, then one `## Heading` per section, optionally `## Heading (300 words)`; a first plain line under
a heading is its goal, `- bullets` are its beats, and `![what to show]` (or `- image: what to show`) is its image.
Sections without a word count share what remains of `words`, if given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import ValidationError

from blockgen.errors import OutlineError
from blockgen.planners.budget import MIN_SECTION_WORDS, allocate_words
from blockgen.planners.outline import Outline

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_WORDS = re.compile(r"\s*\((\d[\d,_]*)\s*words?\)\s*$", re.IGNORECASE)
_IMAGE = re.compile(r"^!\[(.+)\]\s*(\(.*\))?$|^[-*]\s*image:\s*(.+)$", re.IGNORECASE)


def _validated(data: dict, source: str) -> Outline:
    try:
        return Outline.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "outline"
        raise OutlineError(source, f"{where}: {err['msg']}") from None


def _fill_budgets(sections: list[dict], words: int | None, source: str) -> None:
    missing = [s for s in sections if s.get("words") is None]
    if not missing:
        return
    if words is None:
        raise OutlineError(source, f"section {missing[0].get('heading')!r} has no word count and no total was given")
    left = words - sum(s["words"] for s in sections if s.get("words") is not None)
    if left < MIN_SECTION_WORDS * len(missing):
        raise OutlineError(source, f"the sections with word counts leave {left} of {words} words for "
                           f"{len(missing)} more sections (at least {MIN_SECTION_WORDS} each)")
    for section, share in zip(missing, allocate_words(left, [1.0] * len(missing))):
        section["words"] = share


def outline_from_markdown(text: str, *, words: int | None = None, kind: str = "report",
                          source: str = "outline.md") -> Outline:
    title, sections, current = None, [], None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        heading = _HEADING.match(line)
        if heading and len(heading.group(1)) == 1 and title is None and not sections:
            title = heading.group(2)
        elif heading:
            name, count = heading.group(2), None
            found = _WORDS.search(name)
            if found:
                count, name = int(re.sub(r"[,_]", "", found.group(1))), name[: found.start()]
            current = {"heading": name, "beats": [], "words": count}
            sections.append(current)
        elif current is None:
            raise OutlineError(source, f"line {number}: text before the first section heading: {line[:40]!r}")
        elif image := _IMAGE.match(line):
            current["image"] = {"description": (image.group(1) or image.group(3)).strip()}
        elif line[0] in "-*" and line[1:2] == " ":
            current["beats"].append(line[2:].strip())
        elif not current.get("goal"):
            current["goal"] = line
        else:
            current["goal"] += " " + line
    if not sections:
        raise OutlineError(source, "no section headings (## Heading) found")
    _fill_budgets(sections, words, source)
    return _validated({"title": title or sections[0]["heading"], "kind": kind, "sections": sections}, source)


def outline_from_data(data, *, words: int | None = None, kind: str | None = None, source: str = "outline") -> Outline:
    """An outline from parsed JSON/YAML: {"title", "sections": [{"heading", "goal", "beats", "words", "image"}]}."""
    if not isinstance(data, dict):
        raise OutlineError(source, f"expected a mapping with 'title' and 'sections', got {type(data).__name__}")
    data = dict(data)
    if kind is not None:
        data.setdefault("kind", kind)
    sections = data.get("sections")
    if not isinstance(sections, list) or not all(isinstance(s, dict) for s in sections):
        raise OutlineError(source, "'sections' must be a list of mappings")
    data["sections"] = [dict(s) for s in sections]
    _fill_budgets(data["sections"], words, source)
    return _validated(data, source)


def load_outline(path: str | Path, *, words: int | None = None, kind: str | None = None) -> Outline:
    """Read an outline file: .json, .yaml / .yml, or .md / .markdown / .txt (a Markdown heading list)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OutlineError(source, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OutlineError(source, f"cannot read ({exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise OutlineError(source, f"not valid JSON ({exc})") from None
        return outline_from_data(data, words=words, kind=kind, source=source)
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise OutlineError(source, f"not valid YAML ({exc})") from None
        return outline_from_data(data, words=words, kind=kind, source=source)
    if suffix in (".md", ".markdown", ".txt"):
        return outline_from_markdown(text, words=words, kind=kind or "report", source=source)
    raise OutlineError(source, f"unknown outline format {suffix!r} (use .json, .yaml, .yml or .md)")
