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
