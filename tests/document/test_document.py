"""Document state: atomic saves, resume checks, old (version-1) states, exports (Markdown, escaped HTML, JSON)."""

import json
import os

import pytest

from blockgen.document import Document, ImageRecord, Paragraph, Request, export_all, to_html, to_markdown
from blockgen.document import writable_directory
from blockgen.errors import DocumentStateError, InvalidArgumentError
from blockgen.planners import Outline


def _doc():
    outline = Outline(title="Tides <and> moons", kind="story", sections=[
        {"heading": "Arrival", "words": 60, "image": {"after_paragraph": 1, "description": "a ship"}},
        {"heading": "Departure & after", "words": 40}])
    doc = Document.start(Request(kind="story", prompt="a harbour story", words=100, seed=7), outline)
    doc.paragraphs.append(Paragraph(section=0, text="First paragraph.\n\nSecond <script>alert(1)</script> paragraph.",
                                    words=5, tokens=12, forward_passes=4, seconds=0.5))
    doc.paragraphs.append(Paragraph(section=1, text="They left at dawn.", words=4, tokens=6, forward_passes=2,
                                    seconds=0.25))
    doc.images.append(ImageRecord(section=0, after_paragraph=1, path="images/s01-01.png", prompt="a ship",
                                  caption="A ship <b>docks</b>", seed=3, model="tiny-sd", seconds=1.0))
    return doc


def test_save_and_load_round_trip(tmp_path):
    doc = _doc()
    path = doc.save(tmp_path / "state.json")
    assert Document.load(path, doc.request) == doc
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    stats = doc.stats()
    assert stats["words"] == 9 and stats["tokens_per_forward"] == 3.0 and stats["tokens_per_second"] == 24.0


def test_a_version_1_state_still_loads(tmp_path):
    """Version 1 stored the paragraphs under "blocks"; such a state loads, and saves again as the current version."""
    doc = _doc()
    raw = json.loads(doc.model_dump_json())
    raw["blocks"] = raw.pop("paragraphs")
    raw["version"] = 1
    path = tmp_path / "state.json"
    path.write_text(json.dumps(raw))
    old = Document.load(path, doc.request)
    assert old == doc and [p.text for p in old.paragraphs] == [p.text for p in doc.paragraphs]
    assert json.loads(old.save(path).read_text())["version"] == doc.version == 2
    assert Document.load(path, doc.request) == doc


def test_a_failed_save_keeps_the_previous_state(tmp_path, monkeypatch):
    doc = _doc()
    path = doc.save(tmp_path / "state.json")
    before = path.read_text()
    doc.paragraphs.append(Paragraph(section=1, text="More.", words=1, tokens=2, forward_passes=1, seconds=0.1))

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        doc.save(path)
    assert path.read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_resume_refuses_other_requests_and_corrupt_states(tmp_path):
    doc = _doc()
    path = doc.save(tmp_path / "state.json")
    other = Request(kind="story", prompt="a different story", words=100, seed=7)
    with pytest.raises(DocumentStateError, match="another request"):
        Document.load(path, other)
    path.write_text(path.read_text()[:200])
    with pytest.raises(DocumentStateError, match="corrupt"):
        Document.load(path)
    raw = json.loads(doc.model_dump_json())
    raw["request"]["words"] = 999
    path.write_text(json.dumps(raw))
    with pytest.raises(DocumentStateError, match="fingerprint"):
        Document.load(path)
    with pytest.raises(DocumentStateError, match="no saved state"):
        Document.load(tmp_path / "missing.json")


def test_markdown_and_html_exports(tmp_path):
    doc = _doc()
    md = to_markdown(doc)
    assert md.startswith("# Tides <and> moons\n")
    # after_paragraph=1: between the first and the second paragraph
    assert md.index("First") < md.index("![A ship <b>docks</b>](images/s01-01.png)") < md.index("Second")
    page = to_html(doc)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>Tides &lt;and&gt; moons</title>" in page and "Departure &amp; after" in page
    assert '<img src="images/s01-01.png" alt="A ship &lt;b&gt;docks&lt;/b&gt;">' in page
    paths = export_all(doc, tmp_path)
    assert json.loads(paths["json"].read_text())["fingerprint"] == doc.fingerprint
    assert paths["html"].read_text() == page and paths["markdown"].read_text() == md


def test_output_directory_must_be_writable(tmp_path):
    assert writable_directory(tmp_path / "new" / "dir").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InvalidArgumentError) as info:
        writable_directory(blocker / "sub")
    assert info.value.parameter == "out"
