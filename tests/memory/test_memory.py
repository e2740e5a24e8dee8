"""Summary tokens (later sentences favoured, budget kept), vector retrieval, and the entity table."""

import pytest
import torch
from helpers import diffusion_checkpoint

import blockgen
from blockgen.errors import InvalidArgumentError
from blockgen.loading.embedder import embed
from blockgen.memory import EntityTable, ParagraphMemory, extractive_summary, position_weights, split_sentences

PARAGRAPH = (
    "The harbour town woke early. Fishing boats left before dawn. "
    "By noon the storm warnings had reached the coast. "
    "Mara decided to sail north to warn the fleet before the storm broke."
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("memory") / "bd"))


def test_split_sentences():
    assert split_sentences(PARAGRAPH) == [
        "The harbour town woke early.",
        "Fishing boats left before dawn.",
        "By noon the storm warnings had reached the coast.",
        "Mara decided to sail north to warn the fleet before the storm broke.",
    ]
    assert split_sentences('He said "Go." Then he left.') == ['He said "Go."', "Then he left."]


def test_position_weights_favour_later_sentences():
    weights = position_weights(4)
    assert weights == sorted(weights) and weights[-1] == 1.0 and weights[0] < weights[-1]
    assert position_weights(3, recency=0.0) == [1.0, 1.0, 1.0]


def test_summary_keeps_the_budget_and_favours_the_end(tiny):
    summary = extractive_summary(PARAGRAPH, tiny, budget=80)
    assert len(summary.token_ids) <= 80
    assert 3 in summary.sentences  # the last sentence (where the text is going) is kept
    assert 0 not in summary.sentences  # the opening one is the first to go
    assert summary.text.endswith("before the storm broke.")
    flat = extractive_summary(PARAGRAPH, tiny, budget=80, recency=0.0)
    assert flat.sentences != summary.sentences or flat.sentences == [3]


def test_summary_of_one_long_sentence_keeps_its_end(tiny):
    summary = extractive_summary("Mara decided to sail north to warn the fleet before the storm broke.", tiny,
                                 budget=10)
    assert len(summary.token_ids) == 10 and summary.text.endswith("broke.")
    with pytest.raises(InvalidArgumentError, match="budget"):
        extractive_summary(PARAGRAPH, tiny, budget=0)


def test_retrieval_by_cosine_similarity():
    memory = ParagraphMemory()
    texts = ["The recipe needs flour, butter and two eggs, baked for forty minutes.",
             "The lighthouse keeper climbed the stairs to light the lamp before the storm.",
             "Interest rates rose again, and the bank's quarterly report showed losses."]
    for i, text in enumerate(texts):
        memory.add(text, section=i)
    query = embed(["A storm was coming and the lamp at the top of the tower had to be lit."])[0]
    best = memory.retrieve(query, k=2)
    assert best[0][0].index == 1 and best[0][1] > best[1][1]
    assert [item.index for item, _ in memory.retrieve(query, k=3, exclude_last=2)] == [0]
    assert memory.retrieve(query, k=0) == []
    assert torch.allclose(memory.vectors().norm(dim=-1), torch.ones(3), atol=1e-4)
    with pytest.raises(InvalidArgumentError, match="k"):
        memory.retrieve(query, k=-1)


def test_entity_table_records_first_mentions():
    table = EntityTable()
    new = table.update(0, PARAGRAPH + " She found Captain Oren Hale at the quay in Port Elly.")
    names = {e.name for e in new}
    assert {"Captain Oren Hale", "Port Elly"} <= names
    assert "The" not in table.entities and "By" not in table.entities
    assert "Mara" not in table.entities  # only seen at a sentence start so far
    table.update(1, "The wind rose. Mara and Oren Hale raised the sail. Mara held the tiller.")
    mara = table.entities["Mara"]
    assert mara.first_paragraph == 0 and mara.fact.startswith("Mara decided")
    assert table.entities["Captain Oren Hale"].first_paragraph == 0
    rendered = table.render()
    assert rendered.splitlines()[0].startswith("- Mara:") and "Port Elly" in rendered


def test_abstractive_summary_asks_the_model_within_budget(tiny):
    from blockgen.memory import abstractive_summary

    summary = abstractive_summary(tiny, PARAGRAPH, budget=12, block_size=4, threshold=0.5)
    assert 0 < len(summary.token_ids) <= 12
    assert summary.text == tiny.decode(summary.token_ids).strip()


def test_the_embedder_loads_without_a_progress_bar_and_leaves_the_setting(monkeypatch):
    import sentence_transformers
    from transformers.utils import logging as hf_logging

    from blockgen.loading.embedder import load_embedder

    real, seen = sentence_transformers.SentenceTransformer, []

    def watched(*args, **kwargs):
        seen.append(hf_logging.is_progress_bar_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", watched)
    for before in (True, False):
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()
        embedder = load_embedder.__wrapped__()  # past the cache: each round really loads
        assert seen[-1] is False  # no bar cuts into the CLI's own progress line
        assert hf_logging.is_progress_bar_enabled() is before  # the caller's setting is left as it was
    hf_logging.enable_progress_bar()
    assert embed(["tides"], embedder).shape[-1] == 384
