"""The model-driven planner: skeleton infill, cleaning, validation, and repairs that are always on the record."""

import pytest
from helpers import diffusion_checkpoint

import blockgen
from blockgen.errors import InvalidArgumentError
from blockgen.planners import draft_outline, section_count
from blockgen.planners.draft import check, clean, similar


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("plan") / "bd", max_position_embeddings=1024))


def test_clean_keeps_plan_text_only():
    assert clean("1. The Moon's Pull\nmore text") == "The Moon's Pull"
    assert clean("  - **Goal:** Explain the bulges.  ") == "Explain the bulges."
    assert clean("Section 3: Spring tides:") == "Spring tides"
    assert clean('"Harbours at low water"') == "Harbours at low water"
    assert clean("1848: The Birth of the Press") == "1848: The Birth of the Press"  # a year is not numbering
    assert clean("2.1: Local effects") == "Local effects"
    assert clean("\n\n") == ""


def test_check_names_what_is_wrong():
    assert check("Tides and the Moon", "heading", []) is None
    assert check("", "heading", []) == "no words"
    assert check("Hi", "goal", []) == "fewer than 3 words"
    assert check(" ".join(["word"] * 13), "heading", []) == "more than 12 words"
    assert check("]J\x11Jh xx", "heading", []) == "control or broken characters"
    assert check("ab ### 12345 %%%", "heading", []) == "mostly not letters"
    assert "too close to" in check("100 Years of Hope, part 2", "heading", ["100 Years of Hope"])
    assert check("Explain how the Moon's gravity raises two bulges", "goal", ["Tides and the Moon"]) is None
    assert similar("The Science of Tides", "the science of tides!") and not similar("Harbours", "Spring tides")


def test_section_counts_follow_length():
    assert [section_count(w) for w in (100, 300, 1500, 5000, 20000)] == [1, 3, 5, 12, 12]


def test_draft_is_valid_budgeted_and_repairs_are_recorded(tiny):
    outline = draft_outline(tiny, "how tides work", 900, "report", seed=3)
    assert outline.source == "model" and outline.kind == "report"
    assert len(outline.sections) == section_count(900) and outline.words == 900
    parts = [outline.title] + [p for s in outline.sections for p in (s.heading, s.goal, *s.beats) if p]
    repaired = {r.split(":", 1)[0] for r in outline.repairs}
    for n, section in enumerate(outline.sections, 1):
        heading = f"section {n:02d} heading"
        # every part is either the model's text (passing validation) or a replacement named in the repairs
        if heading not in repaired:
            earlier = parts[: parts.index(section.heading)]
            assert check(section.heading, "heading", earlier) is None
    for repair in outline.repairs:
        assert "the model wrote" in repair and ("used" in repair or "left out" in repair)
    headings = [s.heading.lower() for s in outline.sections]
    assert len(set(headings)) == len(headings)
    assert draft_outline(tiny, "how tides work", 900, "report", seed=3) == outline  # seeded: reproducible


def test_draft_options_and_bad_input(tiny):
    story = draft_outline(tiny, "a lighthouse keeper", 600, "story", sections=2, beats=1, attempts=0)
    assert len(story.sections) == 2 and all(len(s.beats) <= 1 for s in story.sections)
    assert story.words == 600
    for kwargs, parameter in [(dict(topic=" "), "topic"), (dict(kind="poem"), "kind"), (dict(words=0), "words"),
                              (dict(sections=0), "sections"), (dict(beats=9), "beats")]:
        args = dict(topic="tides", words=300, kind="report") | kwargs
        with pytest.raises(InvalidArgumentError, match=parameter):
            draft_outline(tiny, args.pop("topic"), args.pop("words"), args.pop("kind"), **args)


def test_writer_uses_the_model_planner_for_diffusion_checkpoints(tiny, tmp_path):
    doc = blockgen.write_report("how tides work", words=120, out=tmp_path, model=tiny, paragraph_words=40,
                                block_size=4, threshold=0.5, window_tokens=64, cleanup="repeats")
    assert doc.outline.source == "model"
    forced = blockgen.write_report("how tides work", words=120, out=tmp_path / "t", model=tiny, planner="template",
                                   paragraph_words=40, block_size=4, threshold=0.5, window_tokens=64, cleanup="repeats")
    assert forced.outline.source == "template" and forced.outline.sections[0].heading == "Introduction"


@pytest.mark.slow
def test_default_model_drafts_most_of_its_own_plan(default_lm):
    outline = draft_outline(default_lm, "how tides work", 600, "report", sections=3, beats=1, seed=0)
    slots = 1 + 3 * 3  # title, then heading, goal and one beat per section
    assert outline.source == "model" and outline.words == 600
    assert len(outline.repairs) < slots / 2  # most of the plan is the model's own text, validated
    headings = [s.heading for s in outline.sections]
    assert len({h.lower() for h in headings}) == 3
