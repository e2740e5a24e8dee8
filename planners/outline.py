"""The outline of a document: title, sections with heading, goal, beats and a word budget, optional image slots."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ImageSlot(BaseModel):
    """Where an image goes inside a section (after its paragraph number `after_paragraph`, 0 = before the text) and
    what it should show."""

    model_config = ConfigDict(extra="forbid")

    after_paragraph: int = Field(0, ge=0)
    description: str = Field(min_length=1)
    placed: bool = Field(False, description="added by the image budget, not planned: what to draw comes from the "
                                            "text around it")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heading: str = Field(min_length=1)
    goal: str = ""
    beats: list[str] = Field(default_factory=list)
    words: int = Field(ge=1, le=200_000)
    image: ImageSlot | None = None

    @field_validator("heading")
    @classmethod
    def _heading_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("heading is blank")
        return value.strip()

    def node_text(self) -> str:
        """The text that stands for this section in the outline latent."""
        parts = [self.heading]
        if self.goal:
            parts.append(self.goal)
        parts.extend(self.beats)
        return ". ".join(p.strip().rstrip(".") for p in parts if p.strip())


class Outline(BaseModel):
    """A plan of the document. `latent` holds one embedding per node: the title first, then each section.

    `source` says who planned it (the model, a template, the user); `repairs` lists every part of a model-drafted
    plan that was changed after validation, with what the model wrote and why it was replaced.
    """

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    kind: Literal["report", "story"] = "report"
    sections: list[Section] = Field(min_length=1)
    latent: list[list[float]] | None = None
    source: Literal["model", "template", "user"] = "user"
    repairs: list[str] = Field(default_factory=list)

    @property
    def words(self) -> int:
        return sum(s.words for s in self.sections)

    @property
    def images(self) -> list[tuple[int, ImageSlot]]:
        return [(i, s.image) for i, s in enumerate(self.sections) if s.image is not None]

    def node_texts(self) -> list[str]:
        return [self.title] + [s.node_text() for s in self.sections]

    @model_validator(mode="after")
    def _latent_matches_nodes(self) -> "Outline":
        if self.latent is not None and len(self.latent) != len(self.sections) + 1:
            raise ValueError(f"latent has {len(self.latent)} rows for {len(self.sections) + 1} outline nodes")
        return self

    def render(self, current: int | None = None, budgets: bool = True) -> str:
        """The outline as text for a model's context; the section being written is marked."""
        lines = [f"Title: {self.title}"]
        for i, s in enumerate(self.sections):
            marker = ">> " if i == current else "   "
            size = f" ({s.words} words)" if budgets else ""
            lines.append(f"{marker}{i + 1}. {s.heading}{size}{': ' + s.goal if s.goal else ''}")
            if i == current:
                lines.extend(f"      - {beat}" for beat in s.beats)
        return "\n".join(lines)
