"""Rows joining a running decode at block boundaries decode as they would alone; the batch's columns stay bounded."""

import pytest
import torch

from blockgen.engine import BlockEvent, DecodeSettings, FinishEvent, LowConfidenceScheduler, ThresholdScheduler, decode
from blockgen.engine.joining import JoinRoom


def _prompt(length, seed=0):
    return torch.randint(4, 267, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _alone(lm, scheduler, prompt, max_new, **settings):
    s = DecodeSettings(max_new_tokens=max_new, stop_token_ids=(), **settings)
    return next(e.tokens for e in decode(lm.model, lm.family, scheduler, [prompt], s) if isinstance(e, FinishEvent))


class Arrivals:
    """Rows that arrive at given boundaries (counted in calls); each joins at the first boundary with room."""

    def __init__(self, schedule: dict[int, list[tuple[list[int], int]]]):
        self.schedule, self.calls, self.waiting, self.joined_at, self.widths = schedule, 0, [], [], []

    def __call__(self, room: JoinRoom):
        self.waiting += self.schedule.get(self.calls, [])
        self.calls += 1
        self.widths.append(room.width)
        taken = [row for row in self.waiting if room.take(len(row[0]), row[1])]
        self.waiting = [row for row in self.waiting if row not in taken]
        self.joined_at += [self.calls] * len(taken)
        return taken


def _joined(lm, scheduler, prompts, max_new, arrivals, **settings):
    s = DecodeSettings(max_new_tokens=max_new, stop_token_ids=(), **settings)
    events = list(decode(lm.model, lm.family, scheduler, prompts, s, join=arrivals))
    return {e.row: e.tokens for e in events if isinstance(e, FinishEvent)}, events


SCHEDULE = {
    2: [(_prompt(40, seed=3), 10)],  # longer than the room left of the boundary: every column shifts right
    3: [(_prompt(2, seed=4), 30)],  # reaches past the last column: the batch widens
    9: [(_prompt(7, seed=5), 6), (_prompt(13, seed=6), 9)],  # after the first rows left: their columns are dropped
}


@pytest.mark.parametrize("cache", ["exact", "none"])
def test_ar_rows_that_join_equal_their_answer_alone(ar_lm, cache):
    prompts, scheduler = [_prompt(5, seed=1), _prompt(9, seed=2)], LowConfidenceScheduler()
    arrivals = Arrivals(SCHEDULE)
    got, _ = _joined(ar_lm, scheduler, prompts, 8, arrivals, block_size=1, steps=1, cache=cache)
    joined = [row for rows in SCHEDULE.values() for row in rows]
    assert len(arrivals.joined_at) == len(joined) and not arrivals.waiting
    expected = [_alone(ar_lm, scheduler, p, 8, block_size=1, steps=1, cache=cache) for p in prompts]
    expected += [_alone(ar_lm, scheduler, p, n, block_size=1, steps=1, cache=cache) for p, n in joined]
    assert [got[i] for i in range(len(expected))] == expected
    # the first rows' columns were dropped once they left: the batch is no wider than its widest live layout
    assert arrivals.widths[-1] < max(arrivals.widths)


@pytest.mark.parametrize("cache", ["exact", "none", "prefix", "dual"])
@pytest.mark.parametrize("block,scheduler", [(4, ThresholdScheduler(threshold=0.5)), (2, LowConfidenceScheduler())])
def test_block_causal_rows_that_join_equal_their_answer_alone(block_lm, shifted_block_lm, cache, block, scheduler):
    for lm in (block_lm, shifted_block_lm):
        prompts = [_prompt(6, seed=1), _prompt(11, seed=2)]
        arrivals = Arrivals(SCHEDULE)
        got, events = _joined(lm, scheduler, prompts, 12, arrivals, block_size=block, steps=block, cache=cache)
        joined = [row for rows in SCHEDULE.values() for row in rows]
        expected = [_alone(lm, scheduler, p, 12, block_size=block, steps=block, cache=cache) for p in prompts]
        expected += [_alone(lm, scheduler, p, n, block_size=block, steps=block, cache=cache) for p, n in joined]
        assert [got[i] for i in range(len(expected))] == expected, (lm.family.logit_shift, cache)
        # rows join only where a whole attention block (4 columns) begins: once per block of 4, every other of 2
        blocks = sum(isinstance(e, BlockEvent) for e in events)
        assert blocks * block // 4 - 1 <= len(arrivals.widths) <= blocks * block // 4


def test_room_refuses_rows_past_the_width_or_the_context(ar_lm):
    trained = ar_lm.model.config.max_position_embeddings
    seen = []

    def join(room):
        if seen:
            return []
        seen.append((room.take(3, trained), room.take(30, 4), room.take(20, 12), room.rows))
        return [(_prompt(30), 4)]

    s = DecodeSettings(max_new_tokens=3, block_size=1, steps=1, stop_token_ids=())
    events = list(decode(ar_lm.model, ar_lm.family, LowConfidenceScheduler(), [_prompt(4)], s, join=join,
                         join_width=40))
    # past the context: refused; the first that fits: taken (25 columns in front of a 9-column batch); the next
    # would widen it to 42 columns
    assert seen[0] == (False, True, False, 2)
    assert {e.row for e in events if isinstance(e, FinishEvent)} == {0, 1}


def test_a_callback_that_returns_rows_it_did_not_take_is_an_error(ar_lm):
    s = DecodeSettings(max_new_tokens=3, block_size=1, steps=1, stop_token_ids=())
    with pytest.raises(Exception, match="took"):
        list(decode(ar_lm.model, ar_lm.family, LowConfidenceScheduler(), [_prompt(4)], s,
                    join=lambda room: [(_prompt(5), 2)]))


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_bidirectional_rows_that_join_equal_their_answer_alone(llada_lm, cache):
    """A bidirectional row sees its own masked tail: joined where its own first block would start, it does alone."""
    prompts, scheduler = [_prompt(6, seed=1), _prompt(11, seed=2)], LowConfidenceScheduler()
    schedule = {0: [(_prompt(30, seed=3), 8)], 1: [(_prompt(3, seed=4), 8)]}
    arrivals = Arrivals(schedule)
    got, _ = _joined(llada_lm, scheduler, prompts, 12, arrivals, block_size=4, steps=4, cache=cache)
    joined = [row for rows in schedule.values() for row in rows]
    expected = [_alone(llada_lm, scheduler, p, n, block_size=4, steps=4, cache=cache)
                for p, n in [(p, 12) for p in prompts] + joined]
    assert len(arrivals.joined_at) == 2
    assert [got[i] for i in range(len(expected))] == expected
