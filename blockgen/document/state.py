"""The Document: request, outline, written paragraphs with their summaries, images and stats. Saved after every
paragraph."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blockgen.errors import DocumentStateError, InvalidArgumentError
from blockgen.planners.outline import Outline

STATE_VERSION = 2  # 1: the written paragraphs were stored under "blocks" (read and upgraded by Document.load)


class Request(BaseModel):
    """What was asked for. Its fingerprint ties a saved state to the request that made it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["report", "story"]
    prompt: str = Field(min_length=1)
    words: int = Field(ge=1, le=200_000)
    seed: int = 0
    model: str = "default"
    settings: dict = Field(default_factory=dict)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class Paragraph(BaseModel):
    """One written paragraph: the unit the writer generates, summarises, remembers and saves."""

    section: int = Field(ge=0)
    text: str
    summary: str = ""
    words: int = Field(ge=0)
    tokens: int = Field(ge=0)
    forward_passes: int = Field(ge=0)
    seconds: float = Field(ge=0)


class ImageRecord(BaseModel):
    section: int = Field(ge=0)
    after_paragraph: int = Field(ge=0)
    path: str  # relative to the document's output directory
    prompt: str
    caption: str
    seed: int
    model: str
    seconds: float = Field(ge=0)


class Document(BaseModel):
    version: int = STATE_VERSION
    request: Request
    fingerprint: str
    outline: Outline
    paragraphs: list[Paragraph] = Field(default_factory=list)
    images: list[ImageRecord] = Field(default_factory=list)
    status: Literal["writing", "done"] = "writing"

    @classmethod
    def start(cls, request: Request, outline: Outline) -> "Document":
        return cls(request=request, fingerprint=request.fingerprint(), outline=outline)

    @property
    def words(self) -> int:
        return sum(p.words for p in self.paragraphs)

    def section_paragraphs(self, section: int) -> list[Paragraph]:
        return [p for p in self.paragraphs if p.section == section]

    def section_words(self, section: int) -> int:
        return sum(p.words for p in self.section_paragraphs(section))

    def stats(self) -> dict:
        tokens = sum(p.tokens for p in self.paragraphs)
        forwards = sum(p.forward_passes for p in self.paragraphs)
        seconds = sum(p.seconds for p in self.paragraphs)
        return {
            "words": self.words,
            "paragraphs": len(self.paragraphs),
            "tokens": tokens,
            "forward_passes": forwards,
            "tokens_per_forward": tokens / forwards if forwards else 0.0,
            "tokens_per_second": tokens / seconds if seconds else 0.0,
            "images": len(self.images),
        }

    # ---- persistence
    def save(self, path: str | Path) -> Path:
        """Write the state atomically: a crash leaves either the previous state or this one, never a mix."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.model_dump_json(indent=1))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, request: Request | None = None) -> "Document":
        """Read a saved state (a version-1 state too); with `request`, refuse a state that another request wrote."""
        path = Path(path)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DocumentStateError(path, "no saved state to resume") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DocumentStateError(path, f"cannot read ({exc})") from None
        try:
            doc = cls.model_validate(_upgrade(json.loads(raw)))
        except (ValueError, ValidationError) as exc:
            raise DocumentStateError(path, f"corrupt state ({str(exc).splitlines()[0]})") from None
        if doc.version != STATE_VERSION:
            raise DocumentStateError(path, f"state version {doc.version}; this blockgen reads {STATE_VERSION}")
        if doc.fingerprint != doc.request.fingerprint():
            raise DocumentStateError(path, "the state's request does not match its fingerprint (edited by hand?)")
        if request is not None and doc.fingerprint != request.fingerprint():
            raise DocumentStateError(path, "this state was written for another request "
                                     f"({doc.request.kind} {doc.request.prompt[:40]!r}, {doc.request.words} words)")
        return doc


def _upgrade(raw):
    """A version-1 state read as version 2: version 1 stored the paragraphs under "blocks", item for item the same."""
    if isinstance(raw, dict) and raw.get("version") == 1 and "paragraphs" not in raw:
        upgraded = {key: value for key, value in raw.items() if key != "blocks"}
        upgraded.update(version=2, paragraphs=raw.get("blocks", []))
        return upgraded
    return raw


def writable_directory(path: str | Path) -> Path:
    """The output directory, created if needed; InvalidArgumentError when it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise InvalidArgumentError("out", str(path), f"not a writable directory ({exc.strerror or exc})") from None
    return path
