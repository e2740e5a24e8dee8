"""What to draw: a prompt from the image slot, a short summary of the text around it, a style preset, and a registry
of characters and places (from the entity table) so that recurring ones are described the same way every time.
Also the image budget (placement), deterministic seeds, and safe file names."""

from __future__ import annotations

import hashlib
import re

from blockgen.errors import InvalidArgumentError
from blockgen.planners.outline import ImageSlot, Outline

STYLES = {
    "storybook": "storybook illustration, soft watercolor, warm light",
    "photo": "photograph, natural light, sharp detail",
    "figure": "clean explanatory illustration, flat colors, white background",
    "none": "",
}
DEFAULT_STYLE = {"story": "storybook", "report": "figure"}
NEGATIVE = "blurry, low quality, distorted, deformed, text, watermark, signature"


def registry(entities, limit: int = 6, words: int = 14) -> dict[str, str]:
    """Name -> how it is described (the sentence that introduced it, cut to `words` words), most mentioned first."""
    ranked = sorted(entities.entities.values(), key=lambda e: (-e.mentions, e.first_block, e.name))[:limit]
    return {e.name: " ".join(e.fact.split()[:words]).rstrip(",;:") for e in ranked}


def image_prompt(description: str, context: str, style: str, characters: dict[str, str], words: int = 60) -> str:
    """The prompt for one image: what to show, the surrounding scene, the fixed description of every registered
    character or place it mentions, then the style; cut to about `words` words (CLIP reads 77 tokens)."""
    if style not in STYLES:
        raise InvalidArgumentError("image_style", style, f"must be one of {sorted(STYLES)}")
    text = f"{description} {context}"
    cast = [f"{name}: {told}" for name, told in characters.items() if re.search(rf"\b{re.escape(name)}\b", text)]
    scene = " ".join(context.split()[:24])
    if scene and scene.lower().startswith(description.strip().rstrip(".").lower()):
        scene = ""  # the scene only repeats what to show
    parts = [description.strip().rstrip(".")] + ([f"scene: {scene}"] if scene else []) + cast
    body = " ".join("; ".join(parts).split()[:words])
    return f"{body}, {STYLES[style]}" if STYLES[style] else body


def caption_for(description: str, scene: str, placed: bool, words: int = 24) -> str:
    """The caption (and what enters memory): the planned description, or for a placed slot the scene it shows."""
    if not placed or not scene.strip():
        return " ".join(description.split())
    first = re.split(r"(?<=[.!?])\s+", scene.strip())[0]
    return " ".join(first.split()[:words]).rstrip(",;:")


def image_seed(seed: int, section: int, after: int) -> int:
    """A deterministic seed per image slot of a request."""
    return int.from_bytes(hashlib.sha256(f"{seed}:image:{section}:{after}".encode()).digest()[:4], "little")


def image_filename(number: int, section: int, description: str) -> str:
    """A safe, deterministic file name (letters, digits, dashes; no path parts), e.g. 01-s02-the-storm.png."""
    slug = re.sub(r"[^a-z0-9]+", "-", description.lower()).strip("-")[:40].strip("-") or "image"
    return f"{number:02d}-s{section + 1:02d}-{slug}.png"


def place_images(outline: Outline, images: int | None) -> Outline:
    """The outline with exactly min(images, sections) image slots: its own slots first (in order), then slots added
    to evenly spread sections without one (after their first paragraph). images=None keeps the outline's slots."""
    if images is None:
        return outline
    n = len(outline.sections)
    if not isinstance(images, int) or isinstance(images, bool) or not 0 <= images <= n:
        raise InvalidArgumentError("images", images, f"must be an int in [0, {n}]: one image per section at most, "
                                   f"and this outline has {n} sections")
    have = [i for i, s in enumerate(outline.sections) if s.image is not None]
    keep = set(have[:images])
    free = [i for i in range(n) if i not in keep]
    need = images - len(keep)
    if need > 0:  # spread the new slots over the sections that have none
        step = len(free) / need
        keep |= {free[int(k * step + step / 2)] for k in range(need)}
    sections = []
    for i, s in enumerate(outline.sections):
        if i not in keep:
            sections.append(s.model_copy(update={"image": None}))
        elif s.image is None:
            slot = ImageSlot(after_paragraph=1, description=s.heading, placed=True)
            sections.append(s.model_copy(update={"image": slot}))
        else:
            sections.append(s)
    return outline.model_copy(update={"sections": sections})
