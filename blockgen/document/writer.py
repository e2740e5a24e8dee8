"""The long-document writer: plan, then write paragraph by paragraph with bounded context; saved after every
paragraph.

For each paragraph: assemble the context (outline with the current section marked, summary tokens of earlier
paragraphs, passages retrieved by the section's latent, entities, the last W tokens verbatim), decode with the
block-diffusion engine, optionally draw k candidates and keep the one nearest its outline node and least like earlier
paragraphs, then record the paragraph (summary, embedding, entities) and save the state atomically. A stopped run
resumes from its state.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator

from blockgen.document.cleanup import Novelty, clean_paragraph
from blockgen.document.context import ContextBudget, assemble
from blockgen.document.export import export_all
from blockgen.document.state import Document, ImageRecord, Paragraph, Request, writable_directory
from blockgen.engine.options import GenerationConfig
from blockgen.errors import InvalidArgumentError
from blockgen.images.prompts import (
    DEFAULT_STYLE,
    NEGATIVE,
    caption_for,
    image_filename,
    image_prompt,
    image_seed,
    registry,
)
from blockgen.loading.embedder import embed
from blockgen.memory import EntityTable, ParagraphMemory, abstractive_summary, extractive_summary, split_sentences
from blockgen.options import Options
from blockgen.planners import Outline, draft_outline, load_outline, place_images, template_outline, with_latent

log = logging.getLogger("blockgen.writer")
_WORD = re.compile(r"[A-Za-z0-9'’-]+|[\u4e00-\u9fff]")
STATE_FILE = "state.json"
WINDOW_PARAGRAPHS = 3  # the overlapping window is cut (to window_tokens) from the text of the last paragraphs


def count_words(text: str) -> int:
    """English words plus CJK characters (as LongWriter counts length)."""
    return len(_WORD.findall(text))


# How the writer decodes unless told otherwise: GenerationConfig's defaults, and a repetition penalty on each
# paragraph's own tokens (small models loop without it). Per paragraph it sets the length, seed and NTK factor.
WRITER_GENERATION = {"repetition_penalty": 1.15, "penalty_scope": "generated"}
PER_PARAGRAPH = ("max_new_tokens", "seed", "stop", "ntk_factor")


class WriterConfig(Options):
    """Everything that shapes a document besides the request itself.

    `generation` holds the decoding options (GenerationConfig's fields); `build` also takes them flat
    (block_size=8, threshold=0.9, ...), as write_report / write_story and the CLI pass them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paragraph_words: int = Field(120, ge=20, le=1000, description="target words per generated paragraph")
    tokens_per_word: float = Field(1.6, gt=0.5, le=4.0, description="budget of new tokens per requested word")
    tolerance: float = Field(0.1, ge=0.0, lt=1.0, description="a section is done within this share of its budget")
    candidates: int = Field(1, ge=1, le=8, description="candidates drawn per paragraph for latent steering")
    novelty_weight: float = Field(1.0, ge=0.0, description="steering weight against similarity to earlier paragraphs")
    planner: Literal["auto", "model", "template"] = Field(
        "auto", description="who drafts the outline when none is given; auto: the model when it is a block-diffusion "
        "checkpoint (it has a mask token, so infill is native), else the template")
    summary_tokens: int = Field(48, ge=8, le=256)
    summary_mode: Literal["extractive", "abstractive"] = "extractive"
    retrieve: int = Field(2, ge=0, le=10)
    window_tokens: int = Field(256, ge=0, le=4096)
    max_context: int | None = Field(None, ge=256, description="token limit of a context (default: the model's)")
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(**WRITER_GENERATION),
                                         description="decoding options of every paragraph")
    cleanup: Literal["full", "repeats"] = Field("full", description="full: drop markup, numbering, prompt echoes, "
                                                "junk and repeated sentences; repeats: only repeated sentences")
    images: int | None = Field(None, ge=0, le=50, description="images to draw (one per section at most); None: the "
                               "outline's image slots")
    image_style: Literal["storybook", "photo", "figure", "none"] | None = None
    image_steps: int | None = Field(None, ge=1, le=200)
    image_guidance: float | None = Field(None, ge=0.0, le=50.0)
    image_width: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    image_height: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    image_negative: str = NEGATIVE
    max_attempts: int = Field(3, ge=1, le=10, description="tries at a paragraph that produced no words")

    @field_validator("generation")
    @classmethod
    def _per_paragraph(cls, generation: GenerationConfig) -> GenerationConfig:
        for name in PER_PARAGRAPH:
            if name in generation.model_fields_set:
                raise ValueError(f"{name} is set by the writer for each paragraph")
        return generation

    @classmethod
    def build(cls, **options) -> "WriterConfig":
        """From keyword options; GenerationConfig's fields may come flat or as `generation` (a dict or a config)."""
        nested = options.pop("generation", None) or {}
        if isinstance(nested, GenerationConfig):
            nested = nested.model_dump(exclude_unset=True)
        flat = {name: options.pop(name) for name in list(options) if name in GenerationConfig.model_fields}
        for name in PER_PARAGRAPH:
            if name in flat or name in nested:
                raise InvalidArgumentError(name, flat.get(name, nested.get(name)), "is set by the writer for each "
                                           "paragraph (seed: pass it to write_report / write_story)")
        generation = GenerationConfig.build(**(WRITER_GENERATION | dict(nested) | flat))
        return super().build(generation=generation, **options)


@dataclass
class WriterEvent:
    kind: Literal["plan", "paragraph", "image", "section", "done"]
    section: int
    heading: str
    words: int  # words in the document so far
    target: int  # words requested
    paragraph_words: int = 0  # words of the paragraph just written
    tokens_per_second: float = 0.0
    context: dict | None = None


def _paragraph_seed(seed: int, index: int, candidate: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}:{candidate}".encode()).digest()[:4], "little")


def _trim_to_words(text: str, words: int) -> str:
    """Keep whole sentences up to about `words` words (at least the first sentence's worth, cut at a word)."""
    kept, total = [], 0
    for sentence in split_sentences(text):
        n = count_words(sentence)
        if kept and total + n > words:
            break
        kept.append(sentence)
        total += n
    result = " ".join(kept)
    if count_words(result) > words * 1.5:
        tokens = result.split()
        result = " ".join(tokens[:words])
    return result


class Writer:
    """Writes one Document for one request into an output directory (state.json, document.md/.html/.json)."""

    def __init__(self, lm, config: WriterConfig | None = None, *, embedder=None, image_model=None):
        self.lm, self.config, self.embedder = lm, config or WriterConfig(), embedder
        self.image_model = image_model
        self._last_context: dict = {}

    @property
    def planner(self) -> str:
        """The planner used when no outline is given ("model" or "template")."""
        if self.config.planner != "auto":
            return self.config.planner
        return "model" if self.lm.family.mask_token_id is not None else "template"

    def plan(self, request: Request, outline: Outline | str | Path | None = None) -> Outline:
        if outline is None and self.planner == "model":
            plan = draft_outline(self.lm, request.prompt, request.words, request.kind, seed=request.seed)
        elif outline is None:
            plan = template_outline(request.prompt, request.words, request.kind)
        elif isinstance(outline, Outline):
            plan = outline
        else:
            plan = load_outline(outline, words=request.words, kind=request.kind)
        return with_latent(place_images(plan, self.config.images), self.embedder)

    def write(
        self,
        request: Request,
        out_dir: str | Path,
        *,
        outline: Outline | str | Path | None = None,
        resume: bool = False,
        on_event: Callable[[WriterEvent], None] | None = None,
    ) -> Document:
        out = writable_directory(out_dir)
        state = out / STATE_FILE
        if resume:
            doc = Document.load(state, request)
        else:
            doc = Document.start(request, self.plan(request, outline))
            doc.save(state)
        emit = on_event or (lambda event: None)
        emit(WriterEvent("plan", 0, doc.outline.title, doc.words, request.words,
                         context={"source": doc.outline.source, "repairs": list(doc.outline.repairs)}))
        slots = doc.outline.images
        if slots and self.image_model is None:
            raise InvalidArgumentError("image_model", None, f"{len(slots)} images were asked for (images= or the "
                                       "outline's image slots) but no image model was given: pass image_model=PATH "
                                       "(a local diffusers text-to-image pipeline directory) or --image-model PATH, "
                                       "or images=0 to write without them")
        memory, entities = self._rebuild(doc)
        latent = torch.tensor(doc.outline.latent)
        for i, section in enumerate(doc.outline.sections):
            self._draw_due(doc, i, out, entities, emit)
            while doc.section_words(i) < section.words * (1 - self.config.tolerance):
                paragraph = self._write_paragraph(doc, i, memory, entities, latent)
                if paragraph is None:
                    break  # the model produced nothing usable: move on rather than loop
                doc.paragraphs.append(paragraph)
                doc.save(state)
                memory.add(paragraph.text, section=i, summary=paragraph.summary,
                           vector=embed([paragraph.text], self.embedder)[0])
                entities.update(len(doc.paragraphs) - 1, paragraph.text)
                speed = paragraph.tokens / paragraph.seconds if paragraph.seconds else 0.0
                emit(WriterEvent("paragraph", i, section.heading, doc.words, request.words, paragraph.words, speed,
                                 self._last_context))
                self._draw_due(doc, i, out, entities, emit)
            self._draw_due(doc, i, out, entities, emit, at_end=True)
            emit(WriterEvent("section", i, section.heading, doc.words, request.words))
        doc.status = "done"
        doc.save(state)
        export_all(doc, out)
        emit(WriterEvent("done", len(doc.outline.sections) - 1, doc.outline.title, doc.words, request.words))
        return doc

    # ---- images
    def _draw_due(self, doc: Document, i: int, out: Path, entities: EntityTable, emit, at_end: bool = False) -> None:
        """Draw section i's image once its paragraph has been written (at the section's end at the latest)."""
        slot = doc.outline.sections[i].image
        if slot is None or any(im.section == i for im in doc.images):
            return
        written = len(doc.section_paragraphs(i))
        if written < slot.after_paragraph and not at_end:
            return
        cfg, section = self.config, doc.outline.sections[i]
        around = [p.summary or p.text for p in doc.section_paragraphs(i)[-1:]] or [section.goal or section.heading]
        characters = registry(entities) if doc.request.kind == "story" else {}
        style = cfg.image_style or DEFAULT_STYLE[doc.request.kind]
        prompt = image_prompt(slot.description, around[0], style, characters)
        seed = image_seed(doc.request.seed, i, slot.after_paragraph)
        settings = self.image_model.settings(steps=cfg.image_steps, guidance=cfg.image_guidance,
                                             width=cfg.image_width, height=cfg.image_height)
        image, seconds = self.image_model.draw(prompt, seed=seed, negative=cfg.image_negative, settings=settings)
        name = image_filename(len(doc.images) + 1, i, slot.description)
        folder = out / "images"
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{name}.tmp"
        image.save(tmp, format="PNG")
        tmp.replace(folder / name)
        caption = caption_for(slot.description, around[0], slot.placed)
        doc.images.append(ImageRecord(section=i, after_paragraph=min(slot.after_paragraph, written),
                                      path=f"images/{name}", prompt=prompt, caption=caption, seed=seed,
                                      model=self.image_model.name, seconds=seconds))
        doc.save(out / STATE_FILE)
        log.info("image %s for section %d: %r (seed %d, %.2fs)", name, i, prompt, seed, seconds)
        emit(WriterEvent("image", i, section.heading, doc.words, doc.request.words,
                         context={"path": f"images/{name}", "prompt": prompt, "seconds": seconds}))

    # ---- internals
    def _rebuild(self, doc: Document) -> tuple[ParagraphMemory, EntityTable]:
        """Memory and entity table of the paragraphs already written (a resumed run sees what the first run saw)."""
        memory, entities = ParagraphMemory(self.embedder), EntityTable()
        if doc.paragraphs:
            vectors = embed([p.text for p in doc.paragraphs], self.embedder)
            for n, (p, v) in enumerate(zip(doc.paragraphs, vectors)):
                memory.add(p.text, section=p.section, summary=p.summary, vector=v)
                entities.update(n, p.text)
        return memory, entities

    def _write_paragraph(self, doc, i, memory, entities, latent) -> Paragraph | None:
        cfg, lm, section = self.config, self.lm, doc.outline.sections[i]
        gen = cfg.generation
        remaining = section.words - doc.section_words(i)
        target = max(20, min(cfg.paragraph_words, remaining))
        max_new = math.ceil(target * cfg.tokens_per_word) + 8
        node = latent[i + 1]
        beats = "; ".join(section.beats)
        instruction = (f"Write the next paragraph of the section \"{section.heading}\""
                       f"{': ' + section.goal if section.goal else ''}{' (' + beats + ')' if beats else ''}. "
                       "Say something new.")
        trained = lm.context_limit
        budget = ContextBudget(max_context=cfg.max_context or trained, window=cfg.window_tokens)
        recent = doc.paragraphs[-WINDOW_PARAGRAPHS:]  # the window's source: retrieval looks only further back
        window = "\n\n".join(p.text for p in recent)
        retrieved = [item.text for item, _ in memory.retrieve(node, cfg.retrieve, exclude_last=len(recent))]
        context = assemble(
            lm, kind=doc.request.kind, outline_text=doc.outline.render(current=i, budgets=False), heading=section.heading,
            instruction=instruction, retrieved=retrieved,
            summaries=[p.summary for p in doc.paragraphs[:-1]] + [f"(Image shown: {im.caption}.)"
                                                                   for im in doc.images],
            entities=entities.render() if doc.request.kind == "story" else "", window_text=window, budget=budget,
            reserve=max_new + gen.block_for(lm.family),
        )
        total = len(context.prompt_ids) + max_new + gen.block_for(lm.family)
        ntk = lm.ntk_factor_for(total) if total > trained else None
        context.log.update(total_tokens=total, ntk_factor=ntk or 1.0)
        self._last_context = context.log
        log.info("context for paragraph %d: %s", len(doc.paragraphs), context.log)
        options = gen.model_dump(exclude=set(PER_PARAGRAPH)) | {"max_new_tokens": max_new, "ntk_factor": ntk}
        index = len(doc.paragraphs)
        written = Novelty([p.text for p in doc.paragraphs])
        for attempt in range(cfg.max_attempts):
            start = time.perf_counter()
            results = []
            for c in range(cfg.candidates):
                # several candidates, or a retry after a paragraph with nothing new, need sampling to differ
                sample = cfg.candidates > 1 or attempt > 0
                temperature = max(gen.temperature, 0.8) if sample else gen.temperature
                seed = _paragraph_seed(doc.request.seed, index, c + attempt * cfg.candidates)
                results.append(lm.generate_results(context.prompt_ids, seed=seed,
                                                   **{**options, "temperature": temperature})[0])
            seconds = time.perf_counter() - start
            repeats_only = cfg.cleanup == "repeats"
            texts = [_trim_to_words(clean_paragraph(r.text, written.copy(), repeats_only=repeats_only), remaining)
                     for r in results]
            best = self._steer(texts, node, memory)
            if best is not None and count_words(texts[best]) > 0:
                text, result = texts[best], results[best]
                if cfg.summary_mode == "abstractive":
                    summary = abstractive_summary(lm, text, cfg.summary_tokens, block_size=gen.block_size,
                                                  threshold=gen.threshold).text
                else:
                    summary = extractive_summary(text, lm, cfg.summary_tokens, embedder=self.embedder).text
                return Paragraph(section=i, text=text, summary=summary, words=count_words(text),
                                 tokens=len(result.tokens), seconds=seconds,
                                 forward_passes=sum(r.stats.forward_passes for r in results))
        return None

    def _steer(self, texts: list[str], node: torch.Tensor, memory: ParagraphMemory) -> int | None:
        """Index of the candidate nearest its outline node and least like earlier paragraphs."""
        usable = [n for n, t in enumerate(texts) if count_words(t) > 0]
        if len(usable) <= 1:
            return usable[0] if usable else None
        vectors = embed([texts[n] for n in usable], self.embedder)
        score = vectors @ torch.nn.functional.normalize(node.float(), dim=-1)
        if len(memory):
            score = score - self.config.novelty_weight * (vectors @ memory.vectors().T).max(-1).values
        return usable[int(score.argmax())]
