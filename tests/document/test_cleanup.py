"""Paragraph cleanup: markers, numbering, prompt echoes, junk and repeated sentences are dropped; new text is kept."""

from blockgen.document.cleanup import Novelty, clean_paragraph


def test_markup_numbering_and_labels_are_removed():
    novelty = Novelty()
    text = "<<How Tides Work>> Tides rise twice a day.\n2. The Moon pulls the water.\nMain Findings: Coasts differ."
    assert clean_paragraph(text, novelty) == "Tides rise twice a day. The Moon pulls the water. Coasts differ."
    assert clean_paragraph("71 words - Harbours silt up slowly.", Novelty()) == "Harbours silt up slowly."


def test_prompt_echoes_junk_and_counts_are_dropped():
    text = ("The text so far ends with: the sea. Summary of what was written so far: tides. "
            "9:10,8:12:13:16:18:22:39. 78 words. The next paragraph continues with tides. Spring tides are high.")
    assert clean_paragraph(text, Novelty()) == "Spring tides are high."


def test_repeats_and_near_repeats_are_dropped_and_new_sentences_remembered():
    novelty = Novelty(["The Moon's gravity raises a bulge of water on the near side of the Earth."])
    text = ("The Moon's gravity raises a bulge of water on the near side of the Earth. "
            "The Moon's gravity raises a bulge of water on the near side of our planet. "
            "Neap tides come when the Sun and Moon pull at right angles. "
            "Neap tides come when the Sun and Moon pull at right angles.")
    assert clean_paragraph(text, novelty) == "Neap tides come when the Sun and Moon pull at right angles."
    assert novelty.is_repeat("Neap tides come when the Sun and Moon pull at right angles!")
    assert not novelty.is_repeat("Harbour pilots read tide tables every morning.")
    copy = novelty.copy()
    copy.add("Harbour pilots read tide tables every morning.")
    assert not novelty.is_repeat("Harbour pilots read tide tables every morning.")


def test_repeats_only_keeps_the_model_text_as_written():
    text = "<<Tides>> 9:10,8:12. The sea. The sea."
    assert clean_paragraph(text, Novelty(), repeats_only=True) == "<<Tides>> 9:10,8:12. The sea."


def test_a_phrase_said_again_at_once_is_said_once():
    text = ("In the midst of it all, she stood, and she stood, and she stood. She was a hero, a hero of the sea, a hero "
            "of the sea. The waves rose very, very high, again and again, as they had for years.")
    assert clean_paragraph(text, Novelty()) == ("In the midst of it all, she stood. She was a hero, a hero of the sea. "
                                                "The waves rose very, very high, again and again, as they had for years.")


def test_the_paragraph_never_ends_mid_sentence():
    # the unfinished sentence is not the model's last one: what followed it was dropped (here an assistant's aside)
    text = "The bakers met at dawn. With the village and the wedding ahead, the horizon lay\nI hope this helps!"
    assert clean_paragraph(text, Novelty()) == "The bakers met at dawn."


def test_a_run_on_is_cut_at_a_clause_not_mid_word_run():
    from blockgen.document.writer import _trim_to_words

    run_on = "The tide rose over the flats, " + ", ".join(f"the boats drifted past marker {n}" for n in range(40))
    cut = _trim_to_words(run_on + ".", 30)
    assert cut.endswith(".") and len(cut.split()) <= 30 and not cut.endswith(",.")
    assert _trim_to_words("One. Two three four.", 3) == "One."


def test_a_quotation_the_cut_leaves_open_loses_its_mark():
    from blockgen.document.writer import _fitted

    text = '"The sun was setting over the mountains. The market had begun. Then she said the words." He smiled.'
    assert _fitted(text, 14, report=False, repair=True) == "The sun was setting over the mountains. The market had begun."
    assert _fitted(text, 14, report=False, repair=False).startswith('"The sun')  # cleanup="repeats" keeps it
    assert _fitted(text, 40, report=False, repair=True) == text  # nothing cut: the quotation closes


def test_the_goal_asked_back_or_used_as_a_label_goes():
    """What a report's Background read back: the goal as a question, and the goal's words as a label."""
    goal = "The history: who first studied it, in which century, and the early ideas."
    text = ("Who first studied it, and when? The answer lies in the work of early astronomers. The early ideas: what "
            "had been written by sailors was collected in almanacs. The first instrument to print: a press of wood.")
    assert clean_paragraph(text, Novelty(pinned=[goal]), first_person=False) == (
        "The answer lies in the work of early astronomers. What had been written by sailors was collected in almanacs. "
        "The first instrument to print: a press of wood.")
    # inside a paragraph wrapped in quotes too (a report's quotes go after)
    intro = "The basics: a simple definition, the key terms, and a familiar example from daily life."
    quoted = '"The basics: a simple definition: vaccines teach the body to know a germ. They are given as shots."'
    assert clean_paragraph(quoted, Novelty(pinned=[intro]), first_person=False) == (
        "A simple definition: vaccines teach the body to know a germ. They are given as shots.")
    # a question of the story's own, or one in dialogue, stays
    story = 'Who had studied the old maps first? "Who first studied it, and when?" she asked.'
    assert clean_paragraph(story, Novelty(pinned=[goal])) == story


def test_a_sentence_reading_back_the_sections_goal_is_dropped():
    """The writer counts the section's goal as written, so an echo of the request is dropped as a repeat."""
    goal = "The history of how tides work: who first studied it, in which century, and the early ideas."
    text = ("The history of how tides work: who first studied it, in which century, and the early ideas. "
            "Greek sailors noticed that the tides followed the moon.")
    assert clean_paragraph(text, Novelty([goal])) == "Greek sailors noticed that the tides followed the moon."


def test_a_recent_sentence_said_again_in_other_words_is_dropped():
    """A small model's loop varies a word each time: most of the sentence's content words in one of the last few
    sentences make it a near-repeat; a sentence that adds content stays, as do older echoes."""
    text = ("You used to walk along the coast and watch the sea rise and fall. You started to look at the sea. "
            "You started looking at the sea. So you started to look at the sea again. "
            "Then you noticed the water climbing the harbour wall twice a day.")
    assert clean_paragraph(text, Novelty()) == (
        "You used to walk along the coast and watch the sea rise and fall. You started to look at the sea. "
        "Then you noticed the water climbing the harbour wall twice a day.")
    novelty = Novelty(["The Moon pulls the ocean toward it."])
    assert novelty.is_repeat("The Moon is pulling the oceans.")
    assert not novelty.is_repeat("The Moon pulls the ocean, and the Sun adds its own smaller pull in spring.")
    assert not novelty.is_repeat("It pulls hard.")  # under three content words, one of them new
    for n in range(8):
        novelty.add(f"Sentence number {n} about harbours, pilots and ships.")
    assert not novelty.is_repeat("The Moon is pulling the oceans.")  # out of the recent window


def test_a_short_sentence_that_only_echoes_the_last_few_is_dropped():
    """'Tides work. The tides work.': five words or fewer, every content word said in the last few sentences (endings
    folded); a short sentence with something new stays, and so does dialogue."""
    text = ("Tides work by gravity. The Moon's orbit around the Earth causes the tides. Tides work. The tides work. "
            "The cycle continues to cycle. The cycle continues. Spring tides are higher.")
    assert clean_paragraph(text, Novelty()) == (
        "Tides work by gravity. The Moon's orbit around the Earth causes the tides. The cycle continues to cycle. "
        "Spring tides are higher.")
    novelty = Novelty(['"Light the lamp," her father said.'])
    assert not novelty.is_repeat('"The lamp," she said.')


def test_a_sentence_frame_is_kept_at_most_twice():
    """A third sentence opening with the same three words is a loop on a frame and goes; repeats_only keeps it."""
    text = ("The economy is a very complex thing. The economy is like a machine, just making things. Tides move "
            "cargo ships in and out of ports. The economy is so complicated that you think you can do everything. "
            "The economy is very complex, and very complex.")
    assert clean_paragraph(text, Novelty()) == ("The economy is a very complex thing. The economy is like a machine, "
                                                "just making things. Tides move cargo ships in and out of ports.")
    assert clean_paragraph(text, Novelty(), repeats_only=True) == text


def test_single_asterisks_of_emphasis_are_removed():
    text = "*The human perspective* is part of it. Tides *rise* twice a day. Neap tides are *weaker*."
    assert clean_paragraph(text, Novelty()) == "The human perspective is part of it. Tides rise twice a day. " \
                                               "Neap tides are weaker."


def test_sentences_start_with_a_capital():
    text = "the printing press changed Europe. this innovation spread ideas. iPhones came much later."
    assert clean_paragraph(text, Novelty()) == (
        "The printing press changed Europe. This innovation spread ideas. iPhones came much later.")
    assert clean_paragraph(text, Novelty(), repeats_only=True) == text  # as the model wrote it


def test_a_quotation_mark_that_closes_nothing_is_dropped():
    assert clean_paragraph('"There is a cycle in nature. The tides rise.', Novelty()) == (
        "There is a cycle in nature. The tides rise.")
    quoted = '"The tidal cycle is old. Scientists study it today."'
    assert clean_paragraph(quoted, Novelty(), first_person=False) == "The tidal cycle is old. Scientists study it today."
    assert clean_paragraph(quoted, Novelty()) == quoted  # a story's paragraph of dialogue stays dialogue
    line = 'She said, "Light the lamp." He ran up the stairs.'
    assert clean_paragraph(line, Novelty(), first_person=False) == line


def test_the_goal_read_back_late_in_a_paragraph_is_dropped():
    """What was asked is pinned: a sentence reading the goal back is a repeat however much was written before it."""
    goal = "Looking ahead: future research, new uses, and the lesson to remember."
    novelty = Novelty(["Tides rise twice a day."], pinned=[goal])
    text = ("Harbour pilots watch the water closely. Fishermen plan their trips by the tables. Ships wait outside the "
            "bar at low water. Children dig for clams on the flats. Birds feed along the mud at dusk. Storm surges can "
            "flood low streets. Engineers build walls against the sea. Old mills once ground grain with the flow. "
            "Sailors told stories of the turning water. Looking ahead, in future research, new uses for the tides, and "
            "the lesson to remember.")
    assert "Looking ahead" not in clean_paragraph(text, novelty.copy())
    assert "Looking ahead" in clean_paragraph(text, Novelty(["Tides rise twice a day.", goal]))  # not pinned: gone by


def test_an_echo_of_the_request_is_dropped_as_a_repeat():
    """The writer seeds its repeat check with the request's own lines: a paragraph that reads them back loses those
    sentences and keeps the rest."""
    from blockgen.document.cleanup import Novelty, clean_paragraph
    from blockgen.document.context import Brief, instruction, request_head

    brief = Brief(kind="report", title="How tides work", premise="how tides work", words_total=1500,
                  headings=["Introduction", "Background", "Main findings", "Analysis", "Conclusion"],
                  heading="Main findings", goal="What the evidence shows.", part=2, parts=3, words=150)
    echo = ('You\'re writing a report titled "How tides work" (about 1500 words). Introduction, Background, Main '
            "findings, Analysis, Conclusion. The tide rises twice a day as the moon pulls the sea.")
    kept = clean_paragraph(echo, Novelty([request_head(brief), instruction(brief, True)]))
    assert kept == "The tide rises twice a day as the moon pulls the sea."
    # without the request's lines the headings stay (the first sentence, with its word count, is meta anyway)
    assert clean_paragraph(echo, Novelty()).startswith("Introduction, Background")


def test_a_sentence_that_loops_on_one_phrase_is_dropped():
    from blockgen.document.cleanup import Novelty, clean_paragraph

    text = ("The Earth rolls around its axis. The rollercoaster effect is not only created by the rollercoaster "
            "effect, but also by the rollercoaster effect itself. High tides come twice a day.")
    assert clean_paragraph(text, Novelty()) == "The Earth rolls around its axis. High tides come twice a day."


def test_offers_speeches_and_a_reports_narrator_are_dropped():
    text = ("Each cycle lasts about twelve hours. If you would like, I can explain the cycle in a simple way. "
            "Ladies and Gentlemen, today we dive into the tides! He has written a great report on it. "
            "I want to make sure that I present my work clearly. The keeper wrote \"I saw it rise\" in the log.")
    report = clean_paragraph(text, Novelty(), first_person=False)
    assert report == "Each cycle lasts about twelve hours. The keeper wrote \"I saw it rise\" in the log."
    # a story keeps its narrator; offers and speeches go in any kind
    story = clean_paragraph(text, Novelty())
    assert story == ("Each cycle lasts about twelve hours. I want to make sure that I present my work clearly. "
                     "The keeper wrote \"I saw it rise\" in the log.")


def test_text_that_judges_its_own_writing_is_dropped():
    text = ('The introduction to the "Introduction" section is as follows: "Vaccines matter." '
            "This story is told in a way that highlights the process. The story is very complex, but the explanation "
            "is very concise and easy to read. B cells make antibodies.")
    assert clean_paragraph(text, Novelty()) == "B cells make antibodies."
