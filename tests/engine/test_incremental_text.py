"""A row's text decoded as it grows: equal to decoding the whole token list at every length (multi-byte characters
split across byte-level tokens included), at a cost linear in the row's length (stop strings re-decoded the whole
text every step: quadratic)."""

import random

import pytest
from helpers import make_tokenizer

from blockgen.engine.generation import IncrementalText, RowText

TEXT = ("The tide turns at noon. Ébb und Flut — 潮の満ち引き 🌊🌕, naïve café; "
        "\u00a0spaces  and\ttabs\n\nnew paragraphs. ") * 3


class Counting:
    """A tokenizer whose decode counts the tokens it is handed."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded = tokenizer, 0

    def decode(self, ids, **kwargs):
        self.decoded += len(ids)
        return self.tokenizer.decode(ids, **kwargs)


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_incremental_text_equals_a_full_decode_at_every_length(which, request):
    tokenizer = make_tokenizer() if which == "tiny" else request.getfixturevalue("default_lm").tokenizer
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    rng = random.Random(0)
    text, n = IncrementalText(tokenizer), 0
    while n < len(ids):
        n = min(len(ids), n + rng.randint(1, 5))  # rows grow by a few tokens a step
        assert text.update(ids[:n]) == tokenizer.decode(ids[:n], skip_special_tokens=True)
        assert all(text.length_of(k) == len(tokenizer.decode(ids[:k], skip_special_tokens=True))
                   for k in range(max(0, n - 5), n + 1))
    assert text.update(ids[:7]) == tokenizer.decode(ids[:7], skip_special_tokens=True)  # not an extension: afresh


def test_stop_search_costs_linear_decoding():
    tokenizer = Counting(make_tokenizer())
    ids = make_tokenizer()(TEXT * 4, add_special_tokens=False)["input_ids"]
    row = RowText(tokenizer, ("never written",))
    for n in range(1, len(ids) + 1):
        assert row.stop_at(ids[:n]) is None
        row.advance(ids[:n], final=False)
    assert tokenizer.decoded < 2 * (IncrementalText.CONTEXT + 1) * len(ids)  # ~14 per token, whatever the length
    found = RowText(make_tokenizer(), ("naïve",))
    cut = next(c for c in (found.stop_at(ids[:n]) for n in range(1, len(ids) + 1)) if c is not None)
    assert make_tokenizer().decode(ids[:cut]).endswith("潮の満ち引き 🌊🌕, ")


def test_row_text_holds_back_what_may_become_a_stop_string(tokenizer):
    """What a stream (and the server) sends while "ti" may still start the stop string "tide turns": the text before
    it, ending at a token's end; once final, nothing of the stop string."""
    ids = tokenizer("the tide turns", add_special_tokens=False)["input_ids"]
    text = RowText(tokenizer, ("tide turns",))
    n = len(tokenizer("the ti", add_special_tokens=False)["input_ids"])
    shown, tokens = text.advance(ids[:n], final=False)
    assert shown in ("the", "the ") and "ti" not in shown and tokenizer.decode(tokens) == shown
    assert text.stop_at(ids) is not None and text.advance(ids, final=True)[0].strip() == ""
