"""Quality measures used by the document benchmarks."""

import pytest
import torch

from blockgen.document.metrics import distinct_n, length_score, plan_adherence, repeated_paragraphs
from blockgen.loading.embedder import embed


def test_length_score_follows_longwriter():
    assert length_score(1000, 1000) == 100.0
    assert length_score(2000, 1000) == pytest.approx(100 * (1 - 1 / 3))
    assert length_score(500, 1000) == pytest.approx(50.0)
    assert length_score(4000, 1000) == 0.0 and length_score(0, 1000) == 0.0
    assert length_score(792, 5000) == 0.0  # the complaint: asked 5,000 words, got 792


def test_distinct_4():
    assert distinct_n("the cat sat on the mat by the door") == 1.0
    assert distinct_n("a b c d a b c d a b c d") == pytest.approx(4 / 9)


def test_repeated_paragraphs_counts_copies_and_near_copies():
    paragraphs = ["The tide rose over the sand.", "Boats left the harbour at dawn.", "The tide rose over the sand!",
                  "A recipe for bread needs flour."]
    assert repeated_paragraphs(paragraphs) == 1
    assert repeated_paragraphs(paragraphs[:2]) == 0


def test_plan_adherence():
    nodes = embed(["Cooking bread: flour, yeast and the oven", "Ocean tides and the moon"])
    texts = ["Knead the dough, let it rise, then bake the loaf.", "The moon pulls the sea into two bulges."]
    assert plan_adherence(texts, nodes) == 1.0
    assert plan_adherence(texts[::-1], nodes) == 0.0
    assert plan_adherence(["", texts[1]], nodes) == 1.0
    assert plan_adherence(["", ""], torch.zeros(2, 384)) == 0.0


def test_a_section_is_judged_whole_not_by_its_opening():
    """The sentence encoder reads about 190 words: a section that opens with one thing and then spends three times as
    long on another is nearest the other, as a reader would judge it."""
    from blockgen.loading.embedder import embed_long

    bread = "Knead the dough with flour and yeast, let it rise in a warm kitchen, then bake the loaf in the oven. " * 12
    tides = "The moon pulls the ocean into two bulges, so the sea rises and falls on the shore twice a day. " * 36
    nodes = embed(["Cooking bread: flour, yeast and the oven", "Ocean tides and the moon"])
    section = bread + tides
    assert len(section.split()) > 3 * 190
    assert int((embed([section]) @ nodes.T).argmax()) == 0  # truncated: only the bread is read
    assert int((embed_long([section]) @ nodes.T).argmax()) == 1
    assert plan_adherence(["", section], nodes) == 1.0
    short = embed_long(["The moon pulls the sea into two bulges."])
    torch.testing.assert_close(short, embed(["The moon pulls the sea into two bulges."]), atol=1e-5, rtol=1e-5)
    assert torch.allclose(embed_long([section]).norm(dim=-1), torch.ones(1))


def test_fluency_measures():
    from blockgen.document.metrics import fragments, meta_phrases, meta_per_1k_words, repeated_ngrams, run_on_share

    long = " ".join(["word"] * 61) + "."
    assert run_on_share(f"{long} A short one. Another short one.") == pytest.approx(1 / 3)
    assert run_on_share("Short. Sentences. Only.") == 0.0
    assert fragments(["This alignment", "In this", "A whole sentence with more than eight words in it.",
                      "A long paragraph with many words that stops in the middle of a"]) == 3
    text = ("Sure! Here is a paragraph about tides. Tides rise twice a day. I hope this helps, let me know. "
            "#tides @SmolLM. This is a summary of what came before. As the previous section said, "
            "the text concludes by saying so.")
    found = [m.lower() for m in meta_phrases(text)]
    assert {"sure!", "here is a", "i hope this", "let me know", "#tides", "@smollm", "summary of what",
            "the previous section", "the text concludes"} <= set(found)
    assert meta_phrases("Tides rise and fall twice a day as the Moon pulls the sea.") == []
    assistant = ("In this rewritten version, I have made minor adjustments to grammar. If you'd like me to rephrase a "
                 "sentence, I can do that. Please go ahead and share the next section.")
    assert len(meta_phrases(assistant)) >= 4
    assert meta_per_1k_words("Sure, tides rise.") == pytest.approx(1000 / 3)
    eight = "one two three four five six seven eight"
    assert repeated_ngrams(f"{eight} nine. {eight} ten.") == pytest.approx(1 / 11)  # 18 words, 11 8-grams
    assert repeated_ngrams("a b c d e f g h i j") == 0.0


def test_judge_perplexity_prefers_the_models_own_kind_of_text(tmp_path):
    import blockgen
    from blockgen.document.metrics import judge_perplexity, median_judge_perplexity
    from helpers import save_checkpoint, tiny_hf_model

    lm = blockgen.load(save_checkpoint(tiny_hf_model(), tmp_path / "m"), device="cpu")
    text = "the the the the the"
    x = torch.tensor([lm.encode_text(text)])
    logits = lm.model(x)[0, :-1]
    expected = torch.nn.functional.cross_entropy(logits.float(), x[0, 1:]).exp()
    assert judge_perplexity(lm, text) == pytest.approx(float(expected), rel=1e-5)
    assert median_judge_perplexity(lm, [text, "the he the", "x"]) == pytest.approx(
        sorted([judge_perplexity(lm, text), judge_perplexity(lm, "the he the")])[0] / 2
        + sorted([judge_perplexity(lm, text), judge_perplexity(lm, "the he the")])[1] / 2)


def test_text_that_describes_itself_is_meta():
    from blockgen.document.metrics import meta_phrases

    meta = ["The second paragraph tells about how the Greeks sailed.", "The report is about the effects of tides.",
            "It talks about the economy.", "In your article, you've got a key point right there.",
            "This is what you've been talking about.", "So, I'm going to tell you how you can tell.",
            "Don't forget the final answer.", "One of the open questions I would like to ask is this.",
            "The article provides a comprehensive overview of the topic.",
            "It's been a few weeks since I last wrote about the harbour.",
            "This is all about the main findings of the report.", "This is the main section.",
            "The previous day I decided to write a report that tries to explore the tides.",
            "This process happens to the planet's tides in the way it is described in the report.",
            "A simple formula will be discussed further in the report.", "This is the end of the report.",
            "I'm going to finish the report with something new.", "The report also notes that there are two types.",
            "The essay will wrap up.", "The conclusion will add a little bit to the summary.",
            "The reason for this 200 words is to describe the science behind tides.",
            "In that short essay, there's a fascinating way to explain it.", "First, let's start with the invention.",
            "The story left the reader with a haunting image.", "As the story unfolded, the battle raged on.",
            "The final paragraph will have the effects of this.", "She ended the report with a great summary.",
            "It is indeed one that has been said about in your previous work.", "We will be discussing them in depth.",
            "We are going to talk about the high tides.", "This topic requires a detailed exploration of the tides.",
            "It's clear and easy to read.", "The first in a series of reports that aims to share the science.",
            "The report continues with a section with a lot of details.",
            "You will have to look at closely to find out how tides work.",
            "The report should be about the importance of vaccines.", "You can delve into the huge topic of vaccines.",
            "Your introduction touches on a fundamental aspect of the cycle.",
            "For example, you can talk about the factors that affect tides.", "You can also use bullet points.",
            "You have covered the basics of tides.", "The cycle is influenced by the Moon, as you've just been discussing.",
            "You can take it further.", "This is a topic that you will cover in the report.",
            "You can also add a paragraph that shows what you found.", "The report is covered in detail.",
            "This explanation focuses on the simplification of the explanation.",
            "The explanation is tailored to the audience that is interested in reading it.",
            "(Slightly edited in the direction of grammar) As the Earth rotates, it makes waves.",
            "In the context of this report, it is an important topic.",
            "The cycle of tides repeats itself, which is the subject of today's report.",
            "This revised paragraph focuses on one detail.", "The original text was short.",
            "The paragraphs were reorganized to read better.", "Do not repeat a sentence.",
            "This chapter illustrates the impact of the printing press.",
            "The story had just taken a turning point by the arrival of Ashwood.",
            "The story of two rival bakers in a mountain village has now reached a tantalizing crossroads.",
            "The story went on to explore the concept of peace.",
            "In light of this, one of the highlights of the report is the example it sets.",
            "In a report on the printing press, there are several key points that have been highlighted.",
            "The last point was about the lesson to remember.",
            "The report goes on to explain how vaccines work.", "The report now focuses on how vaccines work.",
            "The report is designed to highlight a specific aspect.",
            "The writer does not provide enough detail to explain the mechanisms.",
            "There are many ways to improve this report.", "You can choose to shorten the main findings section.",
            "Well done, you've done it right.", "The most recent report, about 1500 words, is entitled Vaccines.",
            "However, the outline is left incomplete.", "Another paragraph can be added.",
            "So there is no need to repeat the section.", "It explains how vaccines work, but without any heading.",
            "The final paragraph, focusing on the importance of resilience, goes into detail.",
            "Here is one paragraph explaining how vaccines are used in medicine.",
            "This report is about how vaccines train the immune system.", "The report was written by Dr. John Smith.",
            "You've shown it in medicine.", "It's a one-sentence story that highlights the science of vaccines.",
            "The report also discusses how vaccines have evolved.", "The essay delves into the science of vaccines.",
            "Vaccines work. The essay concludes with the main messages.",
            "The first paragraph focuses on the definition of vaccines.",
            "The purpose of this report is to examine how vaccines work.",
            "It is written in a clear and easy-to-follow narrative style.", "This sentence is very important.",
            "It concludes by saying that science is a tool.",
            "The first paragraph discussed the effectiveness of vaccines.", "The next section explored the impact.",
            "The report also delved into the topic of the environment.",
            "The report's section focused on the effects of vaccines.",
            "In this simple yet profound paragraph, you will highlight a key aspect.",
            "You will avoid using bold formatting, graphics, or enumerations.",
            "(takes a moment to reflect, then looks at you with a curious expression) In the modern era, it grew.",
            "The lessons have been learned. (smiles)", "This report has added a section that will help.",
            "The history of this science is written in a captivating style.", "It was written in the style of a human.",
            "This process, as you mentioned, is connected to the Sun.", "In one paragraph, it explained the process.",
            "The one paragraph that did not have a heading was written by a human.",
            "The conclusion of the report is a reminder of the role vaccines play.",
            "The report was looking at one detail, and not going to repeat anything else.",
            "The explanation in the report was looking at one detail.",
            "This report, which was written in 2020, has influenced the world.", "This report, we shall do so.",
            "This report is explained by a comparison.", "The article now reaches the end, concluding with a sentence.",
            "The first paragraph will explain how the press spread.", "One detail that has been added to the report is this.",
            'She nodded. "Fine." The story then describes the long walk home.',
            "How to add one paragraph: The causes are the lunar cycle and the cycle.",
            "How to make it: How the tides work is a matter of science.",
            "This presentation offers a detailed comparison that makes it clear.",
            "The report concluded. The human perspective influenced the answer.",
            "The report had just one detail, but it was really one sentence.",
            "The report ended with a descriptive sentence that was going to be used.",
            "The report concluded with a sentence about how the tides affect people.",
            "This answer is simple yet thoughtful.",
            'The "Main findings" section contains the most critical information.',
            "The introduction touches on the science behind vaccines, but the main findings are too general.",
            "The analysis section is not provided with the right focus.", "The content is too long.",
            "The sentence could be more concise.", "The end to the report is finished.",
            "When looking ahead, in a section that will go to great lengths, the story can be a lesson.",
            "In the first paragraph, there is one detail that holds the tide's secrets.",
            "The first paragraph sets the foundation for understanding.", "This is a must-read for anyone."]
    assert all(meta_phrases(s) for s in meta), [s for s in meta if not meta_phrases(s)]
    plain = ["The second tide of the day is lower than the first.", "The moon's pull talks to the sea, poets say.",
             "The final stage of the cycle brings the neap tide.", "She said she would like to see the lighthouse.",
             "The report of the cannon echoed over the bay.", "She wrote a report on the harbour every spring.",
             "The reef was described in detail by early divers.", "She read the essays of Montaigne by the fire.",
             "The story of the flood was told in every village.", "Let the tide come in.",
             "We are learning to read the tides.", "We will sail at dawn.", "You can explore the rock pools at low tide.",
             "You can talk to the harbour master about the tables.", "Your boat will float at high tide.",
             "The original press was made of wood.", "Do not swim when the tide turns.",
             "The report should have reached the harbour by noon, she thought.",
             "The chart is easy to read at night.", "The storm continues through the night.",
             "The story of the flood had reached every village by spring.", "Her story had begun in a fishing town.",
             "The story went on for hours by the fire.", "The highlights of the festival were the fireworks.",
             "She wrote in a report about the harbour that the tide was late.",
             "The last point of land was about a mile away.", "The writer Victor Hugo lived in exile on Guernsey.",
             "Doctors revise the schedule every year.", "The trial enrolled about 1500 volunteers.",
             "The report provided by the ministry was late.", "The final paragraph of the treaty was signed in 1648.",
             "Here is one of the oldest harbours in Europe.", "You've seen the tide come in.",
             "The 2019 report concludes that measles cases rose.", "This section of the road covers two miles.",
             "The paper mill closes at noon.", "The purpose of the bridge was clear to everyone.",
             "The inscription is written in an ancient script.", "A report describes the flood of 1953.",
             "He said the report concluded nothing new.", "The text messages arrived at dawn.",
             "The story ended in a small fishing village.", "The answer was written in the stars, sailors said.",
             "He ended the letter with a sentence in Latin.", "The report had a map of the harbour.",
             "The report concluded that the sea wall was too low.",
             "The introduction of the vaccine in 1796 changed medicine.", "The analysis of the samples took a week.",
             "The conclusion is that the vaccine works, the doctors said.", "The content of the vaccine is a weak virus.",
             "The sentence was read out in court.", "A section of the wall fell.", "The tone of the bell was low.",
             "The first treaty sets the border at the river.",
             "The first section of the wall collapsed in 1920.", "In this small fishing village, boats leave at dawn.",
             "You will see the lamp from the harbour.", "The lamp (an old oil burner) smoked all night.",
             "The ministry's report described the flood.", "The letter was written in a shaky hand.",
             "The conclusion of the treaty was celebrated.", "As you walk along the shore, the tide turns.",
             "The river now reaches the end of the valley.", "The explanation in the guide was clear.",
             "The next chapter would begin in Lisbon.", "The next part would be the hardest.",
             "Salt was added to the dough.", "She sat down to write a paragraph in her diary.",
             "The engineers learned how to add a section to the bridge.",
             "Sailors learned how to read the tide: slowly, and by the moon.",
             "The presentation of the catch at the market drew a crowd."]
    assert not any(meta_phrases(s) for s in plain), [meta_phrases(s) for s in plain]


def test_first_person_share_counts_narrator_sentences():
    from blockgen.document.metrics import first_person_share

    narrated = "As I stepped onto the beach, the sun was warm. The tide was out. I'm sure my notes were wet."
    assert first_person_share(narrated) == 2 / 3
    assert first_person_share("Tides rise twice a day. In Italy, the Moon's pull is weak.") == 0.0
    assert first_person_share("") == 0.0
    # a story's dialogue, even a quote over several sentences, is not its narrator
    story = 'She climbed the stairs. "No. I won\'t go. I am staying," she said. Then I lit the lamp.'
    assert first_person_share(story, narration_only=True) == 1 / 3  # "she said." stands as a sentence of its own
    assert first_person_share(story) == 3 / 5


def test_self_repetition_measures_a_candidates_loops():
    from blockgen.document.metrics import self_repetition

    loop = ("The Earth rolls its rollercoaster around its axis. The rollercoaster effect becomes apparent, and the "
            "rollercoaster effect is intertwined with the tides. This creates a loop where the rollercoaster effect "
            "creates the rollercoaster effect.")
    plain = ("The Moon pulls the near side of the ocean toward it. The far side bulges too, because the Earth is "
             "pulled away from the water there. Most coasts see two high tides a day.")
    assert self_repetition(loop) > 0.1 > 0.0 == self_repetition(plain)
    assert self_repetition("") == 0.0


def test_echo_share_measures_loops_of_short_sentences():
    from blockgen.document.metrics import echo_share, self_repetition

    loop = ("The moon made the world. The moon, the tides, the sky. The sky, the skies. The sky, the stars. The stars, "
            "the stars. The stars. So many were lost.")
    assert echo_share(loop) == 2 / 7 and self_repetition(loop) < 0.3  # the pairs measure misses it
    assert echo_share("She looked up at the stars. The stars were bright. Night fell over the harbour.") == 0.0
    assert echo_share("The Moon pulls the sea toward it. The far side bulges too. Most coasts see two tides.") == 0.0
    assert echo_share("One sentence alone.") == 0.0
    # an echo of any earlier sentence, endings folded
    assert echo_share("Tides work by gravity. The Moon causes the tides. The tides worked. Spring tides are high.") == 1 / 4


def test_opener_repetition_measures_a_loop_on_a_sentence_frame():
    from blockgen.document.metrics import fixation, opener_repetition, self_repetition

    loop = ("The economy is a very complex thing. The economy is that there is nothing you can do without a change. "
            "The economy is just so simple that you think you can do anything. The economy is like a machine, just "
            "making things. The economy is so complicated, and it can make you think you can do everything.")
    assert opener_repetition(loop) == 1.0 and fixation(loop) < 0.05 and self_repetition(loop) < 0.3  # they miss it
    plain = ("The Moon pulls the near side of the ocean toward it. The far side bulges too. The Moon pulls the "
             "Earth as well, a little less. Most coasts see two high tides a day.")
    assert opener_repetition(plain) == 1 / 3  # one reused opening in four sentences
    assert opener_repetition("The sea rose. The sea rose again. The sea fell.") == 0.0  # too few sentences to tell
    from blockgen.document.metrics import loops

    assert loops(loop) and not loops(plain)


def test_fixation_measures_a_paragraph_fixed_on_one_word():
    from blockgen.document.metrics import fixation

    fixed = ("The tides work, a cycle of this nature, a cycle of a cycle that the cycles of cycles. The cycle of tides "
             "has the cycle of 10 hours. The cycle of tides has 10 hours of cycles. The cycle of how tides work.")
    plain = ("The Moon pulls the near side of the ocean toward it. The far side bulges too, because the Earth is "
             "pulled away from the water there. Most coasts see two high tides a day, about twelve hours apart.")
    assert fixation(fixed) > 0.1 and fixation(plain) == 0.0
    assert fixation("The cycle, the cycle.") == 0.0  # too few words to tell
