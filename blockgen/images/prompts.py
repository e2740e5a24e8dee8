"""What to draw: a prompt from the image slot, a short summary of the text around it, a style preset, and a registry
of characters and places (from the entity table) so that recurring ones are described the same way every time.
Also deterministic seeds and safe file names. (Placing slots on an outline is the planners' job:
`blockgen.planners.place_images`.)"""

from __future__ import annotations

import hashlib
import re

from blockgen.errors import InvalidArgumentError

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
    ranked = sorted(entities.entities.values(), key=lambda e: (-e.mentions, e.first_paragraph, e.name))[:limit]
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
