"""The paragraph request: one plain chat turn with the section's goal, a focus and a length, and the document's memory
within its budget (oldest lines dropped first); the reply starts fresh unless a window is asked for."""

import pytest
from helpers import diffusion_checkpoint

import blockgen
from blockgen.document.context import Brief, ContextBudget, assemble, instruction
from blockgen.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("c") / "bd"))


BRIEF = Brief(kind="report", title="How tides work", premise="how tides work", words_total=800,
              headings=["Introduction", "Background", "Conclusion"], heading="Background", goal="The history of tides",
              part=2, parts=2, words=120, focus="a concrete example")


def test_the_request_reads_like_a_plain_chat_turn(lm):
    memory = ["Introduction: Tides rise and fall twice a day.", "Background, so far: The Greeks saw the Moon's role."]
    context = assemble(lm, BRIEF, memory=memory, retrieved=[], entities="", window_text="",
                       budget=ContextBudget(context_tokens=4096), reserve=200)
    text = lm.decode(context.prompt_ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")  # the reply is fresh
    assert 'You are writing a report titled "How tides work" (about 800 words).' in text
    assert "- Introduction: Tides rise and fall twice a day." in text and "(do not repeat it)" in text
    assert ('Write the next paragraph of the "Background" section of the report "How tides work": The history of '
            'tides. Focus on a concrete example. '
            "Write one paragraph of about 120 words, with no heading, and say something not said before.") in text
    assert context.log["memory_lines"] == 2 and context.log["window"] == 0


def test_memory_keeps_its_newest_lines_and_the_window_opens_the_reply(lm):
    memory = [f"Section {n}: " + "many words here " * 20 for n in range(8)]
    tight = assemble(lm, BRIEF, memory=memory, retrieved=[], entities="", window_text="The sea was calm.",
                     budget=ContextBudget(context_tokens=4096, memory=1200, window=16), reserve=100)
    text = lm.decode(tight.prompt_ids, skip_special_tokens=False)
    kept = [n for n in range(8) if f"Section {n}:" in text]
    assert kept and kept == list(range(8 - len(kept), 8)) and len(kept) < 8  # the oldest go first
    assert text.endswith("<|im_start|>assistant\nThe sea was calm.\n\n")
    with pytest.raises(InvalidArgumentError) as info:
        assemble(lm, BRIEF, memory=[], retrieved=[], entities="", window_text="",
                 budget=ContextBudget(context_tokens=256), reserve=300)
    assert info.value.parameter == "context_tokens"


def test_first_paragraph_of_a_section_has_no_focus_or_novelty_clause():
    first = Brief(**{**BRIEF.__dict__, "part": 1, "focus": ""})
    assert instruction(first, has_memory=False) == ('Write the "Background" section of the report "How tides work": '
                                                    "The history of tides. Write one paragraph of about 120 words, "
                                                    "with no heading.")
