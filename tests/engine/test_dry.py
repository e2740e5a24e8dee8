"""DRY ("don't repeat yourself"): penalties as the definition gives them, the decode loop applying them where the
text before a position is known, and the same text from the AR loop as from a plain reference loop."""

import random
from types import SimpleNamespace

import pytest
import torch
from helpers import make_tokenizer, save_checkpoint, tiny_hf_model

import blockgen
from blockgen.engine import GenerationConfig
from blockgen.engine.decode import DecodeSettings, _dry
from blockgen.engine.sampling import breaker_ids, dry_penalties
from blockgen.errors import InvalidArgumentError


def _by_definition(history, multiplier, base, allowed, breakers):
    """Brute force: token t extends a repeat of length L when history's last L tokens followed by t occur earlier
    (the L tokens free of breakers); t gets multiplier * base ** (L - allowed) for its longest L >= allowed."""
    n, out = len(history), {}
    for t in set(history) - set(breakers):
        best = 0
        for length in range(1, n):
            tail = history[n - length :]
            if any(x in breakers for x in tail):
                break
            if any(history[j : j + length] == tail and history[j + length] == t for j in range(n - length)):
                best = length
        if best >= allowed:
            out[t] = multiplier * base ** (best - allowed)
    return out


def test_penalties_follow_the_definition():
    rng = random.Random(0)
    for trial in range(300):
        history = [rng.randrange(4) for _ in range(rng.randrange(2, 40))]
        allowed, breakers = rng.choice([1, 2, 3]), rng.choice([set(), {0}])
        got = dry_penalties(history, multiplier=0.8, base=1.75, allowed_length=allowed, breakers=breakers)
        expected = _by_definition(history, 0.8, 1.75, allowed, breakers)
        assert got.keys() == expected.keys(), (history, allowed, breakers)
        assert all(got[t] == pytest.approx(expected[t]) for t in got), history
    # "a b c x ... a b c": x would make "a b c x" again, a repeat of 3 past the allowed 2
    assert dry_penalties([1, 2, 3, 9, 5, 1, 2, 3], multiplier=0.8) == {9: pytest.approx(0.8 * 1.75)}
    assert dry_penalties([1, 2, 3, 9, 5, 1, 2, 3], multiplier=0.0) == {}
    assert dry_penalties([1, 2, 3, 9, 5, 1, 2, 3], multiplier=0.8, breakers={2}) == {}  # a breaker ends the match


def test_breakers_are_the_tokens_holding_them():
    tok = make_tokenizer()
    ids = breaker_ids(tok, ("\n", ":"))
    assert {tok.convert_tokens_to_ids(t) for t in ("Ċ", ":")} <= ids
    assert tok.convert_tokens_to_ids("a") not in ids and breaker_ids(tok, ()) == frozenset()


def test_options_are_validated():
    with pytest.raises(InvalidArgumentError, match="dry_multiplier"):
        GenerationConfig.build(dry_multiplier=-1)
    with pytest.raises(InvalidArgumentError, match="dry_base"):
        GenerationConfig.build(dry_base=0.5)


def test_only_the_first_masked_position_of_a_row_is_penalized():
    """In a block some positions' left neighbours are still masks: DRY applies where the text before is known."""
    m = 99
    x = torch.tensor([[5, 1, 2, 7, 1, 2, m, m, m],    # first mask at column 6: history 5 1 2 7 1 2 -> 7 penalized
                      [5, 1, 2, 7, 1, 2, 7, m, m],    # column 6 committed: the first mask is column 7
                      [5, 1, 2, 7, 1, 2, 7, 3, 4]])   # no mask left: untouched
    rows = SimpleNamespace(block=SimpleNamespace(start=6), x=x, active=torch.tensor([True, True, True]),
                           editable=torch.zeros_like(x, dtype=torch.bool), valid=torch.ones_like(x, dtype=torch.bool))
    s = DecodeSettings(max_new_tokens=3, block_size=3, steps=3, dry_multiplier=1.0, dry_base=2.0)
    logits = torch.zeros(3, 3, 100)
    _dry(logits, rows, torch.tensor([0, 1, 2]), x[:, 6:] == m, s)
    assert logits[0, 0, 7] == -1.0 and logits[0].abs().sum() == 1  # "1 2" then 7 again: a repeat of 3
    # row 1, before column 7: 5 1 2 7 1 2 7; "1 2 7" occurred followed by 1: penalty 2 ** (3 - 2)
    assert logits[1, 1, 1] == -2.0 and logits[1].abs().sum() == 2
    assert logits[2].abs().sum() == 0
    _dry(torch.zeros(3, 0, 100), rows, torch.tensor([], dtype=torch.long), x[:, :0] == m, s)  # no position: nothing


def test_the_history_is_the_scope_the_penalty_sees():
    """Padding never counts; with penalty_scope="generated" only the row's own committed text does, so a repeat of
    the prompt is free there."""
    m, pad = 99, 0
    x = torch.tensor([[pad, pad, 4, 5, 6, 4, 5, m],     # left-padded: the prompt 4 5 6 4 5 has "4 5" then 6 again
                      [4, 5, 6, 8, 9, 4, 5, m]])        # generated from column 3: "8 9 4 5" holds no repeat
    valid = torch.tensor([[False, False] + [True] * 6, [True] * 8])
    editable = torch.zeros_like(valid)
    editable[:, 3:] = True
    rows = SimpleNamespace(block=SimpleNamespace(start=7), x=x, active=torch.tensor([True, True]),
                           editable=editable, valid=valid)
    for scope, expected in (("context", [[6], [6]]), ("generated", [[], []])):
        s = DecodeSettings(max_new_tokens=1, block_size=1, steps=1, dry_multiplier=1.0, penalty_scope=scope)
        logits = torch.zeros(2, 1, 100)
        _dry(logits, rows, torch.tensor([0]), x[:, 7:] == m, s)
        assert [row[0].nonzero().flatten().tolist() for row in logits] == expected, scope


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return blockgen.load(save_checkpoint(tiny_hf_model(seed=3), tmp_path_factory.mktemp("dry") / "ckpt"),
                         device="cpu", dtype="float32", quantize=None)


@pytest.mark.parametrize("scope", ["context", "generated"])
def test_the_ar_loop_writes_what_a_plain_loop_with_dry_writes(tiny, scope):
    options = dict(dry_multiplier=1.5, dry_base=1.75, dry_allowed_length=2, dry_breakers=(":",), penalty_scope=scope)
    breakers = breaker_ids(tiny.tokenizer, (":",))
    prompt = tiny.encode("the cat sat on the mat: the cat sat on the")
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(40):
            logits = tiny.model(torch.tensor([ids]))[0, -1]
            seen = ids if scope == "context" else ids[len(prompt):]
            for t, p in _by_definition(seen, 1.5, 1.75, 2, breakers).items():
                logits[t] -= p
            ids.append(int(logits.argmax()))
            if ids[-1] in tiny.stop_token_ids:
                ids.pop()
                break
    got = tiny.generate_results(prompt, max_new_tokens=40, block_size=1, **options)[0]
    assert got.tokens == ids[len(prompt):]
    plain = tiny.generate_results(prompt, max_new_tokens=40, block_size=1)[0]
    assert plain.tokens != got.tokens  # the random tiny model loops; DRY changed what it wrote
