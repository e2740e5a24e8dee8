"""Planners turn a request into an outline and its outline latent. Installed as `blockgen.planners`."""

from blockgen.planners.budget import allocate_words, rebudget
from blockgen.planners.draft import draft_outline, section_count
from blockgen.planners.latent import embed, load_embedder, with_latent
from blockgen.planners.outline import ImageSlot, Outline, Section
from blockgen.planners.parse import load_outline, outline_from_data, outline_from_markdown
from blockgen.planners.template import template_outline

__all__ = [
    "ImageSlot",
    "Outline",
    "Section",
    "allocate_words",
    "draft_outline",
    "embed",
    "load_embedder",
    "load_outline",
    "outline_from_data",
    "outline_from_markdown",
    "rebudget",
    "section_count",
    "template_outline",
    "with_latent",
]
