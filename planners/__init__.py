"""Planners turn a request into an outline and its outline latent. Installed as `blockgen.planners`."""

from blockgen.loading.embedder import embed, load_embedder
from blockgen.planners.budget import allocate_words, rebudget
from blockgen.planners.draft import draft_outline, section_count
from blockgen.planners.images import place_images
from blockgen.planners.latent import with_latent
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
    "place_images",
    "rebudget",
    "section_count",
    "template_outline",
    "with_latent",
]
