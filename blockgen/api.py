"""The Python API for documents: write_report and write_story."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from blockgen.document.state import Document, Request
from blockgen.document.writer import Writer, WriterConfig, WriterEvent
from blockgen.errors import InvalidArgumentError


def check_request(kind: str, prompt, words, **options) -> WriterConfig:
    """A document request's own values checked before anything is loaded: the topic or premise, the length and the
    writer's options (returned built). Raises InvalidArgumentError naming the bad one."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidArgumentError("topic" if kind == "report" else "premise", prompt, "is empty")
    if not isinstance(words, int) or isinstance(words, bool) or not 1 <= words <= 200_000:
        raise InvalidArgumentError("words", words, "must be an int between 1 and 200000")
    return WriterConfig.build(**options)


def _write(kind, prompt, *, words, out, model, outline, resume, seed, on_event, image_model=None,
           **options) -> Document:
    from blockgen.runtime import LoadedModel, load

    config = check_request(kind, prompt, words, **options)
    lm = model if isinstance(model, LoadedModel) else load(model)
    request = Request(kind=kind, prompt=prompt.strip(), words=words, seed=seed, model=lm.name,
                      settings=config.model_dump(mode="json"))
    images = None
    if image_model is not None:
        from blockgen.images import ImageModel, load_image_model

        images = image_model if isinstance(image_model, ImageModel) else load_image_model(image_model)
    return Writer(lm, config, image_model=images).write(request, out, outline=outline, resume=resume,
                                                        on_event=on_event)


def write_report(
    topic: str,
    *,
    words: int = 1500,
    out: str | Path = "blockgen-report",
    model="default",
    outline=None,
    resume: bool = False,
    seed: int = 0,
    on_event: Callable[[WriterEvent], None] | None = None,
    image_model=None,
    **options,
) -> Document:
    """Plan and write a report of about `words` words into `out` (state.json, document.md/.html/.json).

    model: "default", a checkpoint path, or a LoadedModel. outline: an Outline or an outline file (JSON, YAML,
    Markdown); by default a template plan. resume=True continues a stopped run from out/state.json. Other options
    are WriterConfig's fields (paragraph_words, candidates, retrieve, window_tokens, block_size, threshold, ...).
    image_model: a local diffusers text-to-image directory, a pipeline object or an ImageModel; with images=N
    (WriterConfig) or the outline's image slots, images are drawn between paragraphs into out/images/.
    """
    return _write("report", topic, words=words, out=out, model=model, outline=outline, resume=resume, seed=seed,
                  on_event=on_event, image_model=image_model, **options)


def write_story(
    premise: str,
    *,
    words: int = 1500,
    out: str | Path = "blockgen-story",
    model="default",
    outline=None,
    resume: bool = False,
    seed: int = 0,
    on_event: Callable[[WriterEvent], None] | None = None,
    image_model=None,
    **options,
) -> Document:
    """Plan and write a story of about `words` words; see write_report for the options."""
    return _write("story", premise, words=words, out=out, model=model, outline=outline, resume=resume, seed=seed,
                  on_event=on_event, image_model=image_model, **options)
