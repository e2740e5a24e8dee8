"""Template outlines: a story's goals name its main character as the request does, never "the hero"."""

import pytest

from blockgen.errors import InvalidArgumentError
from blockgen.planners import template_outline
from blockgen.planners.template import MAIN_CHARACTER, protagonist


@pytest.mark.parametrize("topic, who", [
    ("a lighthouse keeper's daughter relights the lamp in a storm", "the lighthouse keeper's daughter"),
    ("two rival bakers in a mountain village must cook together for a wedding", "the two rival bakers"),
    ("a cartographer discovers that her maps change the land they describe", "the cartographer"),
    ("a robot that learns to paint", "the robot"),
    ("An old fisherman catches a fish that talks.", "the old fisherman"),
    ("A young witch learns to fly", "the young witch"),
    ("Sherlock Holmes solves his last case", "Sherlock Holmes"),
    ("a lighthouse keeper", "the lighthouse keeper"),
    ("the last dragon wakes up", "the last dragon"),
])
def test_the_main_character_is_the_requests_leading_noun_phrase(topic, who):
    assert protagonist(topic) == who


@pytest.mark.parametrize("topic", [
    "pirates hunt for treasure on a haunted island",  # a plural subject and a bare verb: no telling them apart
    "how the moon got its craters",
    "once upon a time a fox lived in the woods",
    "a boy and his brave old dog cross the desert together",  # no end to the phrase within five words
    "a",
])
def test_no_clear_main_character_gives_a_neutral_one(topic):
    assert protagonist(topic) == MAIN_CHARACTER


def test_story_goals_name_the_main_character_in_every_section():
    outline = template_outline("a lighthouse keeper's daughter relights the lamp in a storm", 1200, "story")
    goals = [s.goal for s in outline.sections]
    assert len(goals) == 5 and all("the lighthouse keeper's daughter" in g for g in goals)
    assert not any("hero" in g or "{" in g for g in goals)
    short = template_outline("pirates hunt for treasure", 200, "story")  # three sections, a neutral character
    assert [s.heading for s in short.sections] == ["Opening", "Turning point", "Resolution"]
    assert all(MAIN_CHARACTER in s.goal for s in short.sections)
    report = template_outline("a lighthouse keeper's daughter", 800, "report")  # reports name nobody
    assert not any("daughter" in s.goal for s in report.sections)
    with pytest.raises(InvalidArgumentError, match="kind"):
        template_outline("a robot", 300, "poem")
