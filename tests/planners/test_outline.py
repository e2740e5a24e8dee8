"""Outlines: the model, word budgets, user-supplied files (JSON, YAML, Markdown), and the outline latent."""

import json

import pytest
import torch

from blockgen.errors import InvalidArgumentError, OutlineError
from blockgen.planners import (
    Outline,
    allocate_words,
    embed,
    load_outline,
    outline_from_markdown,
    rebudget,
    with_latent,
)

MARKDOWN = """# How tides work

## The moon's pull (400 words)
Explain the main force behind tides.
- gravity gradient across the earth
- two bulges

## The sun's part
- spring and neap tides
![the sun, the moon and the earth in a line]

## Coasts and harbours
Local effects.
- image: a harbour at low tide
"""


def test_allocate_words_sums_exactly_and_follows_weights():
    for total, weights in [(1500, [1, 1, 1]), (1000, [3, 1, 1, 2]), (101, [1, 1]), (5000, [0.3, 0.7])]:
        budget = allocate_words(total, weights)
        assert sum(budget) == total and min(budget) >= 20
    budget = allocate_words(1000, [3, 1])
    assert budget[0] > 2 * budget[1]


@pytest.mark.parametrize("total", [0, -5, 10**9, 1.5, True])
def test_allocate_words_rejects_bad_totals(total):
    with pytest.raises(InvalidArgumentError) as info:
        allocate_words(total, [1.0])
    assert info.value.parameter == "words"


def test_budgets_that_do_not_fit():
    with pytest.raises(OutlineError, match="at least 100 words"):
        allocate_words(50, [1] * 5)


def test_markdown_outline():
    outline = outline_from_markdown(MARKDOWN, words=1500)
    assert outline.title == "How tides work"
    assert [s.heading for s in outline.sections] == ["The moon's pull", "The sun's part", "Coasts and harbours"]
    assert outline.sections[0].words == 400 and outline.words == 1500
    assert outline.sections[0].goal == "Explain the main force behind tides."
    assert outline.sections[0].beats == ["gravity gradient across the earth", "two bulges"]
    assert outline.sections[1].image.description == "the sun, the moon and the earth in a line"
    assert outline.sections[2].image.description == "a harbour at low tide"
    assert [i for i, _ in outline.images] == [1, 2]
    rendered = outline.render(current=1)
    assert ">> 2. The sun's part" in rendered and "spring and neap tides" in rendered
    assert "gravity gradient" not in rendered  # beats only for the current section


def test_json_and_yaml_files(tmp_path):
    data = {"title": "A story", "kind": "story",
            "sections": [{"heading": "Arrival", "words": 300, "beats": ["a ship docks"]},
                         {"heading": "Departure", "goal": "she leaves", "words": 200}]}
    (tmp_path / "o.json").write_text(json.dumps(data))
    (tmp_path / "o.yaml").write_text(
        "title: A story\nkind: story\nsections:\n  - heading: Arrival\n    words: 300\n    beats: [a ship docks]\n"
        "  - heading: Departure\n    goal: she leaves\n    words: 200\n")
    from_json, from_yaml = load_outline(tmp_path / "o.json"), load_outline(tmp_path / "o.yaml")
    assert from_json == from_yaml and from_json.kind == "story" and from_json.words == 500
    (tmp_path / "o.md").write_text(MARKDOWN)
    assert load_outline(tmp_path / "o.md", words=900).words == 900


@pytest.mark.parametrize(
    "name,content,words,match",
    [
        ("bad.json", "{not json", None, "not valid JSON"),
        ("bad.yaml", "title: [unclosed", None, "not valid YAML"),
        ("list.json", "[1, 2]", None, "mapping"),
        ("empty.json", '{"title": "T", "sections": []}', None, "sections"),
        ("blank.json", '{"title": "T", "sections": [{"heading": " ", "words": 100}]}', None, "heading"),
        ("nowords.json", '{"title": "T", "sections": [{"heading": "A"}]}', None, "no word count"),
        ("extra.json", '{"title": "T", "sections": [{"heading": "A", "words": 50, "colour": 1}]}', None, "colour"),
        ("none.md", "just some text\nand more", None, "before the first section"),
        ("tight.md", "# T\n## A (990 words)\n## B\n", 1000, "leave 10 of 1000"),
        ("outline.docx", "x", None, "unknown outline format"),
    ],
)
def test_malformed_outline_files_are_named(tmp_path, name, content, words, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(OutlineError, match=match) as info:
        load_outline(path, words=words)
    assert info.value.source == str(path)


def test_missing_outline_file(tmp_path):
    with pytest.raises(OutlineError, match="no such file"):
        load_outline(tmp_path / "nope.md")


def test_rebudget_keeps_proportions():
    outline = outline_from_markdown(MARKDOWN, words=1500)
    longer = rebudget(outline, 3000)
    # the 20-word floor of each section, plus the rest in proportion to the old budgets
    assert longer.words == 3000 and longer.sections[0].words == pytest.approx(20 + 400 * 2940 / 1500, abs=1)


def test_outline_latent_is_one_embedding_per_node():
    outline = with_latent(outline_from_markdown(MARKDOWN, words=1500))
    latent = torch.tensor(outline.latent)
    assert latent.shape == (4, 384)
    assert torch.allclose(latent.norm(dim=-1), torch.ones(4), atol=1e-4)
    # a paragraph about neap tides lands nearest the sun's section, one about harbours nearest the coasts
    queries = embed(["At spring tide the sun and moon pull together; at neap tide they pull at right angles.",
                     "In the harbour the boats sat on the mud until the water came back."])
    nearest = (queries @ latent[1:].T).argmax(-1).tolist()
    assert nearest == [1, 2]
    assert Outline.model_validate_json(outline.model_dump_json()) == outline


def test_latent_rows_must_match_nodes():
    with pytest.raises(ValueError, match="latent"):
        Outline(title="T", sections=[{"heading": "A", "words": 30}], latent=[[0.0]])
