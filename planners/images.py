"""The image budget on an outline: which sections get an image slot, and where."""

from __future__ import annotations

from blockgen.errors import InvalidArgumentError
from blockgen.planners.outline import ImageSlot, Outline


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
