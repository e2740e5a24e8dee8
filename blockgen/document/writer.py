"""The long-document writer: plan, then write paragraph by paragraph with bounded context; saved after every
paragraph.

Each paragraph is asked for the way instruction-tuned models are tuned (one plain chat request: the section, its goal,
a focus for this paragraph, a length), with the document's memory in the request: a summary of every finished
section and of this section's earlier paragraphs (later sentences weighted more), entities for stories. A few
candidates are drawn in one batch and the one kept is nearest its outline node, least like earlier paragraphs, most
fluent by the model's own judgment, and free of meta or assistant phrases. Each paragraph is cleaned, recorded
(summary, embedding, entities) and saved atomically; a stopped run resumes from its state.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator

from blockgen.document.cleanup import Novelty, clean_paragraph, unquoted
from blockgen.document.context import Brief, ContextBudget, assemble, instruction, request_head
from blockgen.document.metrics import (LOOPING_PAIRS, echo_share, first_person_share, fixation,
                                       judge_perplexities, meta_phrases, opener_repetition, self_repetition,
                                       words_of)
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
from blockgen.loading.embedder import embed, embed_long
from blockgen.memory import EntityTable, ParagraphMemory, abstractive_summary, extractive_summary, split_sentences
from blockgen.options import Options
from blockgen.planners import Outline, draft_outline, load_outline, place_images, template_outline, with_latent

log = logging.getLogger("blockgen.writer")
STATE_FILE = "state.json"
WINDOW_PARAGRAPHS = 3  # the overlapping window is cut (to window_tokens) from the text of the last paragraphs
# The angle of each further paragraph of a section whose outline gives no beats (the first paragraph has none).
FOCUS = {
    "report": ("a concrete example", "one detail, looked at closely", "a comparison that makes it clearer",
               "a surprising fact, with numbers where they help"),
    "story": ("what the characters do and say", "the place, its sounds and its light",
              "what the main character feels and decides", "an unexpected detail"),
}


# a paragraph fixed on one word (fixation about 0.1) pays as much as one saying a third of its word pairs again
FIXATION_WEIGHT = 3.0
# sentences opening as an earlier one does, beyond this share, pay as repeated pairs do (a fifth is ordinary: "The
# tides..."; cleanup keeps a frame twice at most, so what is left of a loop on one is two of a few sentences)
FREE_OPENERS = 0.2
SHORT = 0.3  # a paragraph under this share of the words asked for is drawn again (up to max_attempts)


def count_words(text: str) -> int:
    """English words plus CJK characters (as LongWriter counts length)."""
    return len(words_of(text))


# How the writer decodes unless told otherwise (chosen with benchmarks/doc_quality.py): sampling as the plain
# per-section baseline does, plus DRY at llama.cpp's usual 0.8 on the paragraph's own text (on the six documents:
# distinct-4 0.948 -> 0.966, judge perplexity 7.95 -> 7.44; CTRL's penalty at 1.15 had made run-ons); the candidates
# and cleanup take care of what repeats across paragraphs. Per paragraph the writer sets the length, seed and NTK factor.
WRITER_GENERATION = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0, "penalty_scope": "generated",
                     "dry_multiplier": 0.8}
PER_PARAGRAPH = ("max_new_tokens", "seed", "stop", "ntk_factor")


class WriterConfig(Options):
    """Everything that shapes a document besides the request itself.

    `generation` holds the decoding options (GenerationConfig's fields); `build` also takes them flat
    (block_size=8, threshold=0.9, ...), as write_report / write_story and the CLI pass them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paragraph_words: int = Field(150, ge=20, le=1000, description="target words per generated paragraph")
    tokens_per_word: float = Field(1.6, gt=0.5, le=4.0, description="budget of new tokens per requested word")
    tolerance: float = Field(0.1, ge=0.0, lt=1.0, description="a section is done within this share of its budget")
    candidates: int = Field(3, ge=1, le=8, description="candidates drawn per paragraph (in one batch) for latent "
                            "steering")
    novelty_weight: float = Field(0.5, ge=0.0, description="steering weight against similarity to earlier paragraphs")
    fluency_weight: float = Field(0.3, ge=0.0, description="steering weight against the log of the model's own "
                                  "perplexity of a candidate")
    plan_weight: float = Field(1.0, ge=0.0, description="steering bonus for a candidate that leaves its section "
                               "nearer its own outline node than any other (on plan)")
    meta_weight: float = Field(1.0, ge=0.0, description="steering penalty per meta or assistant phrase")
    repeat_weight: float = Field(2.0, ge=0.0, description="steering penalty for the share of a candidate's "
                                 "content-word pairs it says again, of its short sentences that only echo "
                                 "what it said before, of its sentences opening as an earlier one (over a fifth), "
                                 "and for one content word standing over a fifth of them (loops the fluency judge "
                                 "scores as fluent)")
    voice_weight: float = Field(1.0, ge=0.0, description="steering penalty for a candidate's narrative voice "
                                "leaving the document's: in a report, the share of sentences in a narrator's first "
                                "person ('As I stepped onto the beach...'); in a story, how far that share (dialogue "
                                "aside) stands from the story's so far (a third-person story turning to 'I smiled')")
    plan_redraws: int = Field(1, ge=0, le=4, description="further batches of candidates drawn when the best one is "
                              "nearer another section's outline node than its own (off plan), fixed on one word "
                              "(`fixation`), or flawed (meta, a report's narrator, loops; see `flawed`) with "
                              "redraw_flawed")
    redraw_flawed: bool = Field(False, description="a flawed best candidate also draws another batch (plan_redraws; "
                                "off: +17% time for no measured gain, benchmarks/doc_quality.py)")
    planner: Literal["auto", "model", "template"] = Field(
        "auto", description="who drafts the outline when none is given; auto: the model when it is a block-diffusion "
        "checkpoint (it has a mask token, so infill is native), else the template")
    summary_tokens: int = Field(48, ge=8, le=256, description="summary of each paragraph")
    section_summary_tokens: int = Field(40, ge=8, le=256, description="summary of each finished section")
    memory_tokens: int = Field(384, ge=0, le=4096, description="budget of the summaries in a request")
    memory_relevance: float = Field(0.25, ge=-1.0, le=1.0, description="summary sentences less similar than this to "
                                    "the document's title node stay out of the memory (a drift is not passed on)")
    summary_mode: Literal["extractive", "abstractive"] = "extractive"
    retrieve: int = Field(0, ge=0, le=10, description="earlier passages retrieved by the section's latent")
    window_tokens: int = Field(0, ge=0, le=4096, description="latest text verbatim, opening the reply (0: none)")
    context_tokens: int | None = Field(None, ge=256, description="token budget of a context (default: the model's "
                                       "trained length); above the trained length NTK scaling engages")
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
    if count_words(result) > words * 1.5:  # one run-on sentence: cut it at the last sentence or clause end in reach
        cut = " ".join(result.split()[:words])
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
        if end > len(cut) // 3:
            return cut[: end + 1]
        clause = max(cut.rfind(", "), cut.rfind("; "), cut.rfind(": "))
        result = (cut[:clause] if clause > len(cut) // 3 else cut).rstrip(",;:-– ") + "."
    return result


def _fitted(text: str, words: int, *, report: bool, repair: bool) -> str:
    """The cleaned paragraph cut to about `words` (_trim_to_words); with `repair` (full cleanup), a quotation the
    cut left open loses its opening mark, as cleanup drops a mark that opens nothing."""
    text = _trim_to_words(text, words)
    return unquoted(text, whole=report) if repair else text


def flawed(text: str, raw: str, kind: str) -> bool:
    """Whether the best candidate is still worth another draw (plan_redraws): two meta or assistant phrases as written,
    a report told mostly by an 'I' narrator, or a paragraph looping on its own phrases."""
    return (len(meta_phrases(raw)) >= 2 or (kind == "report" and first_person_share(text) >= 0.5)
            or self_repetition(text) >= LOOPING_PAIRS)


class Writer:
    """Writes one Document for one request into an output directory (state.json, document.md/.html/.json)."""

    def __init__(self, lm, config: WriterConfig | None = None, *, embedder=None, image_model=None):
        self.lm, self.config, self.embedder = lm, config or WriterConfig(), embedder
        self.image_model = image_model
        self._last_context: dict = {}
        self._section_summaries: dict[int, str] = {}
        self._relevance: dict[str, float] = {}  # sentence -> similarity to the title node

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
        self._section_summaries, self._relevance = {}, {}
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
            while self._needs_more(doc, i):
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

    def _section_target(self, doc: Document, i: int) -> int:
        """Section i's budget plus what earlier sections fell short of (or minus what they overshot), within half of
        its budget either way: the document as a whole keeps to the requested length."""
        section = doc.outline.sections[i]
        behind = sum(s.words - doc.section_words(j) for j, s in enumerate(doc.outline.sections[:i]))
        return max(section.words // 2, min(section.words + behind, section.words * 3 // 2))

    def _planned_parts(self, doc: Document, i: int) -> int:
        return max(1, round(self._section_target(doc, i) / self.config.paragraph_words))

    def _needs_more(self, doc: Document, i: int) -> bool:
        """Whether section i takes another paragraph: it is short of its target by more than the tolerance, and, once
        its planned paragraphs are written, by at least 40% of a paragraph (at most two extra paragraphs)."""
        target, written = self._section_target(doc, i), len(doc.section_paragraphs(i))
        missing = target - doc.section_words(i)
        if missing <= self.config.tolerance * target:
            return False
        planned = self._planned_parts(doc, i)
        return written < planned or (missing >= 0.4 * self.config.paragraph_words and written < planned + 2)

    def _brief(self, doc: Document, i: int) -> Brief:
        """What paragraph comes next in section i: its part of the section, length and focus."""
        cfg, section = self.config, doc.outline.sections[i]
        written = len(doc.section_paragraphs(i))
        remaining = self._section_target(doc, i) - doc.section_words(i)
        parts = max(written + 1, self._planned_parts(doc, i))
        words = max(20, min(round(remaining / (parts - written)), round(cfg.paragraph_words * 1.5)))
        if section.beats:
            focus = section.beats[written % len(section.beats)]
        else:
            angles = FOCUS[doc.request.kind]
            focus = angles[written % len(angles)] if written else ""
        return Brief(kind=doc.request.kind, title=doc.outline.title, premise=doc.request.prompt,
                     words_total=doc.request.words, headings=[s.heading for s in doc.outline.sections],
                     heading=section.heading, goal=section.goal, part=written + 1, parts=parts, words=words,
                     focus=focus)

    def _section_summary(self, doc: Document, j: int) -> str:
        """A summary of finished section j (cached; later sentences weighted more)."""
        if j not in self._section_summaries:
            text = " ".join(p.text for p in doc.section_paragraphs(j))
            self._section_summaries[j] = extractive_summary(text, self.lm, self.config.section_summary_tokens,
                                                            embedder=self.embedder).text
        return self._section_summaries[j]

    def _relevant(self, doc: Document, text: str) -> str:
        """The sentences of `text` that keep to the document's subject (similar enough to its title node): what
        drifted off it is not handed on to later paragraphs."""
        sentences = split_sentences(text)
        if not sentences or self.config.memory_relevance <= -1.0:
            return text
        title = torch.nn.functional.normalize(torch.tensor(doc.outline.latent[0]).float(), dim=-1)
        unknown = [s for s in sentences if s not in self._relevance]
        if unknown:
            for sentence, vector in zip(unknown, embed(unknown, self.embedder)):
                self._relevance[sentence] = float(vector @ title)
        return " ".join(s for s in sentences if self._relevance[s] >= self.config.memory_relevance)

    def _memory(self, doc: Document, i: int, windowed: int) -> list[str]:
        """Memory lines, oldest first: each finished section's summary, then this section's earlier paragraphs'
        summaries, each kept to the document's subject; the last `windowed` paragraphs are left out (they are in the
        window verbatim)."""
        upto = len(doc.paragraphs) - windowed
        lines = []
        for j, section in enumerate(doc.outline.sections[:i]):
            if any(n < upto for n, p in enumerate(doc.paragraphs) if p.section == j):
                summary = self._relevant(doc, self._section_summary(doc, j))
                lines.append(f"{section.heading}: {summary or '(written)'}")
        here = [self._relevant(doc, p.summary) for n, p in enumerate(doc.paragraphs)
                if p.section == i and n < upto and p.summary]
        if any(here):
            lines.append(f"{doc.outline.sections[i].heading}, so far: {' '.join(h for h in here if h)}")
        return lines

    def _write_paragraph(self, doc, i, memory, entities, latent) -> Paragraph | None:
        cfg, lm, gen = self.config, self.lm, self.config.generation
        brief = self._brief(doc, i)
        keep_words = round(brief.words * 1.2)  # the model is asked for brief.words; a little more
        max_new = math.ceil(keep_words * cfg.tokens_per_word) + 16  # is kept, and room for it to finish a sentence
        node = latent[i + 1]
        trained = lm.context_limit
        budget = ContextBudget(context_tokens=cfg.context_tokens or trained, memory=cfg.memory_tokens,
                               window=cfg.window_tokens)
        recent = doc.paragraphs[-WINDOW_PARAGRAPHS:] if cfg.window_tokens else []
        retrieved = [item.text for item, _ in memory.retrieve(node, cfg.retrieve, exclude_last=len(recent))]
        context = assemble(
            lm, brief, memory=self._memory(doc, i, len(recent)) + [f"(Image shown: {im.caption}.)"
                                                                   for im in doc.images],
            retrieved=retrieved, entities=entities.render() if doc.request.kind == "story" else "",
            window_text="\n\n".join(p.text for p in recent), budget=budget, reserve=max_new + gen.block_for(lm.family),
        )
        total = len(context.prompt_ids) + max_new + gen.block_for(lm.family)
        ntk = lm.ntk_factor_for(total) if total > trained else None
        context.log.update(total_tokens=total, ntk_factor=ntk or 1.0)
        self._last_context = context.log
        log.info("context for paragraph %d: %s", len(doc.paragraphs), context.log)
        options = gen.model_dump(exclude=set(PER_PARAGRAPH)) | {"max_new_tokens": max_new, "ntk_factor": ntk}
        index = len(doc.paragraphs)
        # the section's goal counts as written, and so do the request's own lines ('You're writing a report titled
        # "How tides work" (about 1500 words).'): a sentence that reads them back ("The history: who first studied it,
        # in which century..."), wherever in the paragraph, is an echo of the request, dropped as a repeat
        written = Novelty([p.text for p in doc.paragraphs], pinned=([brief.goal] if brief.goal.strip() else [])
                          + [request_head(brief), instruction(brief, True)])
        section_so_far = "\n\n".join(p.text for p in doc.paragraphs if p.section == i)
        story_so_far = "\n\n".join(p.text for p in doc.paragraphs) if doc.request.kind == "story" else ""
        began = time.perf_counter()
        for attempt in range(cfg.max_attempts):
            start = time.perf_counter()
            if (cfg.candidates > 1 or attempt > 0) and options["temperature"] == 0:
                options["temperature"] = 0.7  # several candidates, or a retry, need sampling to differ
            results, texts, best, on_plan = [], [], None, False
            for draw in range(1 + cfg.plan_redraws):  # candidates off plan: draw more, keep the best of all
                # also when the best is fixed on one word (every candidate was: the steering could not pass it over)
                if draw and (best is None or (on_plan and not fixation(texts[best]) and not (
                        cfg.redraw_flawed and flawed(texts[best], results[best].text, doc.request.kind)))):
                    break
                seed = _paragraph_seed(doc.request.seed, index, attempt + draw * cfg.max_attempts)
                batch = lm.generate_results([context.prompt_ids] * cfg.candidates, seed=seed, **options)
                results += batch
                texts += [_fitted(clean_paragraph(r.text, written.copy(), repeats_only=cfg.cleanup == "repeats",
                                                  first_person=doc.request.kind != "report"),
                                  keep_words, report=doc.request.kind == "report", repair=cfg.cleanup != "repeats")
                          for r in batch]
                best, on_plan = self._steer(texts, [r.text for r in results], i, latent, memory, brief.words,
                                            section_so_far, doc.request.kind, story_so_far)
                if draw:
                    log.info("paragraph %d: redraw %d (off plan, fixed on a word or flawed), %s", index, draw,
                             "now on plan" if on_plan else "still off plan")
            seconds = time.perf_counter() - start
            short = best is not None and count_words(texts[best]) < SHORT * brief.words
            if best is not None and count_words(texts[best]) > 0 and not (short and attempt + 1 < cfg.max_attempts):
                text, result = texts[best], results[best]
                if cfg.summary_mode == "abstractive":
                    summary = abstractive_summary(lm, text, cfg.summary_tokens, block_size=gen.block_size,
                                                  threshold=gen.threshold).text
                else:
                    summary = extractive_summary(text, lm, cfg.summary_tokens, embedder=self.embedder).text
                return Paragraph(section=i, text=text, summary=summary, words=count_words(text),
                                 tokens=len(result.tokens), seconds=time.perf_counter() - began,
                                 forward_passes=result.stats.forward_passes)
            log.info("paragraph %d: attempt %d gave nothing usable (%s)", index, attempt + 1, seconds)
        return None

    def _steer(self, texts: list[str], raw: list[str], i: int, latent: torch.Tensor, memory: ParagraphMemory,
               asked: int, section_so_far: str = "", kind: str = "report",
               story_so_far: str = "") -> tuple[int | None, bool]:
        """Index of the best candidate (cleaned texts; raw: as the model wrote them): on the document's subject (its
        title node), nearest its own outline node rather than the other sections' nodes (with a bonus, plan_weight,
        when the section it leaves is nearer its own node than any other: on plan), least like earlier
        paragraphs, most fluent by the model's own judgment, with the fewest meta or assistant phrases before cleanup,
        in a report the fewest sentences in a narrator's first person, in a story the voice of `story_so_far` (its
        earlier paragraphs), least looping on its own phrases, and close
        to the `asked` length; None when no candidate has words. Also whether the one chosen is on plan:
        nearer its own outline node than any other section's. The plan is judged on the section as it would read with
        the candidate (`section_so_far` plus it), as the section is what stands for its node."""
        cfg = self.config
        usable = [n for n, t in enumerate(texts) if count_words(t) > 0]
        if not usable:
            return None, False
        # a candidate under SHORT of the asked length is what is left of a bad draw after cleanup: one is kept only
        # when all are (then the writer draws again), never in place of one long enough
        usable = [n for n in usable if count_words(texts[n]) >= SHORT * asked] or usable
        vectors = embed([texts[n] for n in usable], self.embedder)
        nodes = torch.nn.functional.normalize(latent[1:].float(), dim=-1)
        sections = embed_long([f"{section_so_far}\n\n{texts[n]}" for n in usable], self.embedder) \
            if section_so_far else vectors
        similarity = sections @ nodes.T  # (candidates, sections)
        on_plan = similarity.argmax(-1) == i
        if len(usable) == 1:
            return usable[0], bool(on_plan[0])
        score = similarity[:, i] + vectors @ torch.nn.functional.normalize(latent[0].float(), dim=-1)  # + on subject
        if len(nodes) > 1:  # plus what makes it this section rather than the topic as a whole, and being on plan
            score = score + similarity[:, i] - torch.cat([similarity[:, :i], similarity[:, i + 1 :]], 1).max(-1).values
            score = score + cfg.plan_weight * on_plan.float()
        if len(memory):
            score = score - cfg.novelty_weight * (vectors @ memory.vectors().T).max(-1).values
        if cfg.fluency_weight:
            ppl = torch.tensor(judge_perplexities(self.lm, [texts[n] for n in usable])).nan_to_num(1e4)
            score = score - cfg.fluency_weight * ppl.log()
        if cfg.meta_weight:
            score = score - cfg.meta_weight * torch.tensor([float(len(meta_phrases(raw[n]))) for n in usable])
        if cfg.repeat_weight:
            score = score - cfg.repeat_weight * torch.tensor([self_repetition(texts[n]) + echo_share(texts[n])
                                                              + FIXATION_WEIGHT * fixation(texts[n])
                                                              + max(0.0, opener_repetition(texts[n]) - FREE_OPENERS)
                                                              for n in usable])
        if cfg.voice_weight and kind == "report":
            score = score - cfg.voice_weight * torch.tensor([first_person_share(texts[n]) for n in usable])
        elif cfg.voice_weight and story_so_far.strip():  # a story keeps the voice it began in
            told = first_person_share(story_so_far, narration_only=True)
            score = score - cfg.voice_weight * torch.tensor(
                [abs(first_person_share(texts[n], narration_only=True) - told) for n in usable])
        # a candidate far shorter than asked is what is left of a bad draw after cleanup
        score = score - torch.tensor([max(0.0, 1.0 - count_words(texts[n]) / asked) for n in usable])
        best = int(score.argmax())
        return usable[best], bool(on_plan[best])
