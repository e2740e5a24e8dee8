"""The writer end to end: budgets reached, files written, state saved per paragraph, resume equals an uninterrupted
run."""

import json

import pytest
from helpers import diffusion_checkpoint

import blockgen
from blockgen.document import Document
from blockgen.document.writer import count_words
from blockgen.errors import DocumentStateError, InvalidArgumentError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("w") / "bd", max_position_embeddings=1024))


# random weights write bytes, not sentences: keep them (only repeats are dropped) so that there is text to test with
FAST = dict(paragraph_words=40, block_size=4, threshold=0.5, window_tokens=64, retrieve=1, summary_tokens=24,
            cleanup="repeats")


def test_count_words():
    assert count_words("It's a well-known fact, isn't it?") == 6
    assert count_words("潮汐 tides") == 3


def test_report_reaches_its_budgets_and_writes_files(tiny, tmp_path):
    events = []
    doc = blockgen.write_report("how tides work", words=150, out=tmp_path, model=tiny, on_event=events.append,
                                **FAST)
    assert doc.status == "done" and len(doc.outline.sections) == 3
    assert all(doc.section_paragraphs(i) for i in range(len(doc.outline.sections)))
    assert 150 * 0.8 <= doc.words <= 150 * 1.5  # sections that fall short pass the rest on to the next ones
    for name in ("state.json", "document.md", "document.html", "document.json"):
        assert (tmp_path / name).is_file()
    assert Document.load(tmp_path / "state.json") == doc
    kinds = [e.kind for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done" and kinds.count("paragraph") == len(doc.paragraphs)
    paragraph_events = [e for e in events if e.kind == "paragraph"]
    assert all(e.context["prompt_tokens"] <= e.context["limit"] for e in paragraph_events)


def test_interrupted_run_resumes_to_the_same_document(tiny, tmp_path):
    whole = blockgen.write_story("a lighthouse keeper", words=160, out=tmp_path / "whole", model=tiny, **FAST)
    assert len(whole.paragraphs) >= 3

    class Stop(Exception):
        pass

    def interrupt(event):
        if event.kind != "paragraph" or not event.words:
            return
        if len(Document.load(tmp_path / "cut" / "state.json").paragraphs) == 2:
            raise Stop

    with pytest.raises(Stop):
        blockgen.write_story("a lighthouse keeper", words=160, out=tmp_path / "cut", model=tiny, on_event=interrupt,
                             **FAST)
    saved = Document.load(tmp_path / "cut" / "state.json")
    assert len(saved.paragraphs) == 2 and saved.status == "writing"
    resumed = blockgen.write_story("a lighthouse keeper", words=160, out=tmp_path / "cut", model=tiny, resume=True,
                                   **FAST)
    assert resumed.model_dump(exclude={"paragraphs": {"__all__": {"seconds", "forward_passes"}}}) == whole.model_dump(
        exclude={"paragraphs": {"__all__": {"seconds", "forward_passes"}}})
    assert [p.text for p in resumed.paragraphs] == [p.text for p in whole.paragraphs]
    with pytest.raises(DocumentStateError, match="another request"):
        blockgen.write_story("a different keeper", words=160, out=tmp_path / "cut", model=tiny, resume=True, **FAST)


def test_story_context_carries_entities_and_html_is_escaped(tiny, tmp_path):
    doc = blockgen.write_story("Mara and Captain Oren Hale in Port Elly", words=80, out=tmp_path, model=tiny, **FAST)
    page = (tmp_path / "document.html").read_text()
    assert "<script" not in page.lower() or "&lt;script" in page.lower()
    assert json.loads((tmp_path / "document.json").read_text())["request"]["kind"] == "story"
    assert doc.outline.latent is not None and len(doc.outline.latent) == len(doc.outline.sections) + 1


@pytest.mark.parametrize(
    "kwargs,parameter",
    [({"words": 0}, "words"), ({"words": 10**7}, "words"), ({"paragraph_words": 5}, "paragraph_words"),
     ({"candidates": 0}, "candidates")],
)
def test_bad_requests(tiny, tmp_path, kwargs, parameter):
    with pytest.raises(InvalidArgumentError) as info:
        blockgen.write_report("tides", out=tmp_path, model=tiny, **{"words": 100, **kwargs})
    assert info.value.parameter == parameter


def test_empty_topic_and_unwritable_output(tiny, tmp_path):
    with pytest.raises(InvalidArgumentError, match="topic"):
        blockgen.write_report("  ", words=100, out=tmp_path, model=tiny)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgumentError) as info:
        blockgen.write_report("tides", words=100, out=tmp_path / "file" / "sub", model=tiny)
    assert info.value.parameter == "out"


def test_ntk_factor_is_chosen_when_contexts_outgrow_the_trained_length(tiny, tmp_path):
    events = []
    blockgen.write_report("tides", words=400, out=tmp_path, model=tiny, on_event=events.append,
                          **{**FAST, "paragraph_words": 80, "context_tokens": 4096, "window_tokens": 1500})
    logs = [e.context for e in events if e.kind == "paragraph"]
    for log in logs:  # the extrapolation law's factor for every context past the trained 1,024 positions
        expected = tiny.ntk_factor_for(log["total_tokens"]) if log["total_tokens"] > 1024 else 1.0
        assert log["ntk_factor"] == expected
    assert any(log["ntk_factor"] > 1.0 for log in logs)
    assert tiny.model.ntk_factor == 1.0  # restored after each call


@pytest.mark.slow
# (a story on the default model is written, with images, by tests/images/test_illustrated.py)
@pytest.mark.parametrize("kind,prompt,words", [("report", "how tides work", 100)])
def test_default_model_writes_a_short_document(default_lm, tmp_path, kind, prompt, words):
    write = blockgen.write_report if kind == "report" else blockgen.write_story
    doc = write(prompt, words=words, out=tmp_path, model=default_lm)
    assert doc.status == "done" and doc.request.kind == kind
    assert 0.5 * words <= doc.words <= 1.5 * words
    md = (tmp_path / "document.md").read_text()
    assert md.startswith("# ") and all(f"## {s.heading}" in md for s in doc.outline.sections)
    sentences = [s for p in doc.paragraphs for s in p.text.split(". ")]
    assert len(sentences) == len(set(sentences))  # no sentence written twice


def test_abstractive_summaries_come_from_the_model(tiny, tmp_path):
    doc = blockgen.write_report("tides", words=60, out=tmp_path, model=tiny,
                                **{**FAST, "summary_mode": "abstractive", "summary_tokens": 8})
    assert doc.paragraphs and all(p.summary for p in doc.paragraphs)
    assert any(p.summary not in p.text for p in doc.paragraphs)  # written by the model, not extracted from the text


def test_sections_pass_what_they_miss_on_and_stop_at_their_planned_paragraphs(tiny):
    from blockgen.document.state import Document, Paragraph, Request
    from blockgen.document.writer import Writer, WriterConfig
    from blockgen.planners import template_outline

    writer = Writer(tiny, WriterConfig.build(paragraph_words=100, tolerance=0.1))
    doc = Document.start(Request(kind="report", prompt="tides", words=600), template_outline("tides", 600, "report"))
    budgets = [s.words for s in doc.outline.sections]
    assert writer._section_target(doc, 0) == budgets[0] and writer._needs_more(doc, 0)
    assert writer._planned_parts(doc, 0) == 1
    short = budgets[0] - 30  # the first section's one paragraph ends 30 words short (less than 40% of a paragraph)
    doc.paragraphs.append(Paragraph(section=0, text="x " * short, words=short, tokens=1, forward_passes=1, seconds=0.1))
    assert not writer._needs_more(doc, 0)
    target = budgets[1] + 30  # the next section makes up for it
    assert writer._section_target(doc, 1) == target
    parts = max(1, round(target / 100))
    brief = writer._brief(doc, 1)
    assert (brief.part, brief.parts, brief.words) == (1, parts, max(20, min(round(target / parts), 150)))
    assert brief.focus == ""  # a section's first paragraph follows its goal alone
    # a section never takes more than two paragraphs beyond its plan
    for _ in range(parts + 2):
        doc.paragraphs.append(Paragraph(section=1, text="y", words=1, tokens=1, forward_passes=1, seconds=0.1))
    assert not writer._needs_more(doc, 1)
    assert writer._brief(doc, 2).focus == ""


def test_writer_config_nests_the_generation_options():
    from blockgen.document.writer import WriterConfig
    from blockgen.engine import GenerationConfig

    flat = WriterConfig.build(block_size=8, threshold=0.8, candidates=2)
    nested = WriterConfig.build(generation={"block_size": 8, "threshold": 0.8}, candidates=2)
    assert flat == nested and flat.generation.temperature == 0.7  # the writer's own default kept
    assert WriterConfig.build(generation=GenerationConfig(temperature=0.7)).generation.temperature == 0.7
    with pytest.raises(InvalidArgumentError) as info:
        WriterConfig.build(threshold=2.0)
    assert info.value.parameter == "threshold"
    with pytest.raises(InvalidArgumentError) as info:
        WriterConfig.build(max_new_tokens=10)  # the writer sizes each paragraph itself
    assert info.value.parameter == "max_new_tokens"


def test_steering_keeps_the_voice_a_report_and_a_story_are_told_in(tiny):
    """Of two candidates on the same point, a report keeps the one not told by an 'I' narrator; a story may be."""
    import torch

    from blockgen.document.writer import Writer, WriterConfig
    from blockgen.memory import ParagraphMemory
    from blockgen.planners import template_outline
    from planners.latent import with_latent

    outline = with_latent(template_outline("how tides work", 600, "report"))
    latent = torch.tensor(outline.latent)
    narrated = ("As I stepped onto the beach, I watched the tide come in. I knew the moon pulls the sea twice a day. "
                "My notes said the high tide came an hour later each day.")
    plain = ("The tide comes in twice a day because the moon pulls the sea. High tide comes about an hour later each "
             "day, as the moon rises later. The sun adds a smaller pull of its own.")
    texts = [narrated, plain]

    def choose(kind, weight):
        writer = Writer(tiny, WriterConfig.build(voice_weight=weight, fluency_weight=0.0))
        return writer._steer(texts, texts, 1, latent, ParagraphMemory(), 40, "", kind)[0]

    assert choose("report", 0.0) == 0 and choose("report", 10.0) == 1  # the penalty decides it
    assert choose("story", 10.0) == choose("story", 0.0)  # a story's narrator is welcome
    # a story keeps the voice it began in: told in the third person, a turn to "I" loses; told as "I", it wins
    # (its dialogue speaks as "I" in most of its sentences, a quote running over three: the narrator is not "I")
    third = ("The keeper climbed the stairs. \"I am here. I will stay. I know the lamp,\" she said. \"I can do it.\"")
    first = "I climbed the stairs. I lit the lamp and watched the storm. My hands were cold."

    def story(so_far, weight):
        writer = Writer(tiny, WriterConfig.build(voice_weight=weight, fluency_weight=0.0))
        return writer._steer(texts, texts, 1, latent, ParagraphMemory(), 40, "", "story", so_far)[0]

    assert story(third, 10.0) == 1 and story(first, 10.0) == 0
    # a candidate that loops on its own phrase loses to one that does not
    looping = ("The tide comes in because the moon pulls the sea, and the moon pulls the sea because the moon pulls "
               "the tide. The moon pulls the sea, so the moon pulls the tide twice a day.")
    texts[:] = [looping, plain]
    writer = Writer(tiny, WriterConfig.build(repeat_weight=10.0, fluency_weight=0.0))
    assert writer._steer(texts, texts, 1, latent, ParagraphMemory(), 40, "", "report")[0] == 1
    # so does one fixed on a word, shuffling the phrases around it (with the other loop measures blind to it)
    import blockgen.document.writer as writer_module

    texts[:] = [("The tides work, a cycle of this nature, a cycle of a cycle that the cycles of cycles. The cycle of "
                 "tides has the cycle of ten hours. The cycle of how tides work."), plain]
    with pytest.MonkeyPatch.context() as patch:
        for name in ("self_repetition", "echo_share"):
            patch.setattr(writer_module, name, lambda text: 0.0)
        assert writer._steer(texts, texts, 1, latent, ParagraphMemory(), 40, "", "report")[0] == 1
        patch.setattr(writer_module, "FIXATION_WEIGHT", 0.0)
        assert writer._steer(texts, texts, 1, latent, ParagraphMemory(), 40, "", "report")[0] == 0
    # and one looping on a sentence frame, each sentence's tail new (pairs, echoes and fixation all low)
    texts[:] = [("The tide is a pull of the moon on the near ocean. The tide is what sailors read before leaving "
                 "port. The tide is slower in wide bays. The tide is faster in narrow straits."), plain]
    assert writer._steer(texts, texts, 1, latent, ParagraphMemory(), 40, "", "report")[0] == 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer_module, "opener_repetition", lambda text: 0.0)
        assert writer._steer(texts, texts, 1, latent, ParagraphMemory(), 40, "", "report")[0] == 0


def test_steering_prefers_a_candidate_that_keeps_its_section_on_plan(tiny):
    """A full-length candidate mostly about another section's matter loses to a short one on its own section's
    matter once being on plan counts (plan_weight), and the choice is reported as on plan."""
    import torch

    from blockgen.document.writer import Writer, WriterConfig
    from blockgen.memory import ParagraphMemory
    from blockgen.planners import template_outline
    from planners.latent import with_latent

    outline = with_latent(template_outline("how tides work", 600, "report"))
    latent = torch.tensor(outline.latent)
    history = "Greek sailors first studied the tides in the fourth century BC."  # short of the 30 words asked
    mechanism = ("In the past, people noticed the tides. The moon pulls the sea twice a day, and high tide comes about "
                 "an hour later each day as the moon rises later; the sun adds a smaller pull of its own and the water "
                 "bulges on both sides of the Earth as it turns.")
    texts = [mechanism, history]

    def choose(weight):
        writer = Writer(tiny, WriterConfig.build(plan_weight=weight, fluency_weight=0.0, novelty_weight=0.0))
        return writer._steer(texts, texts, 1, latent, ParagraphMemory(), 30, "", "report")

    assert choose(0.0) == (0, False)  # the full-length candidate, off plan (nearer another node than Background's)
    assert choose(1.0) == (1, True)
    # under 30% of the words asked, a candidate is what is left of a bad draw: it never replaces one long enough
    writer = Writer(tiny, WriterConfig.build(plan_weight=1.0, fluency_weight=0.0, novelty_weight=0.0))
    assert writer._steer(texts, texts, 1, latent, ParagraphMemory(), 60, "", "report")[0] == 0
    assert writer._steer([history], [history], 1, latent, ParagraphMemory(), 60, "", "report")[0] == 0  # all short


def test_a_flawed_best_candidate_is_worth_another_draw():
    from blockgen.document.writer import flawed

    good = "The Moon pulls the sea toward it. The far side bulges too. Most coasts see two high tides a day."
    assert not flawed(good, good, "report")
    narrated = "I've spent 20 years studying the tides. I'll finish with this. The sea was calm."
    assert flawed(narrated, narrated, "report") and not flawed(narrated, narrated, "story")
    assert flawed(good, "Sure! Here is the paragraph. " + good + " Let me know if you need more.", "report")
    looping = "The moon pulls the sea, and the moon pulls the sea because the moon pulls the sea. The moon pulls."
    assert flawed(looping, looping, "story")


def test_a_best_candidate_fixed_on_one_word_draws_another_batch(tiny, tmp_path, monkeypatch):
    """Every candidate fixed on a word: the steering cannot pass it over, so the writer draws once more."""
    import blockgen.document.writer as writer_module

    def batches(fixed: float, out) -> int:
        calls = []
        real = tiny.generate_results
        monkeypatch.setattr(tiny, "generate_results", lambda *a, **k: calls.append(1) or real(*a, **k))
        monkeypatch.setattr(writer_module, "fixation", lambda text: fixed)
        doc = blockgen.write_report("how tides work", words=80, out=out, model=tiny, planner="template",
                                    plan_weight=100.0, **FAST)
        monkeypatch.undo()
        return len(calls), len(doc.paragraphs)

    plain, paragraphs = batches(0.0, tmp_path / "plain")
    fixed, same = batches(0.1, tmp_path / "fixed")
    assert same == paragraphs and fixed == 2 * paragraphs > plain  # every paragraph drew its one further batch
