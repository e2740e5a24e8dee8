"""KV cache: prefill + cached steps equal one full forward (causal, block-causal); read-through, trim, padding."""

import pytest
import torch
from helpers import save_checkpoint, tiny_hf_model

import blockgen
from blockgen.errors import InvalidArgumentError
from blockgen.models import Attention, KVCache


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return blockgen.load(save_checkpoint(tiny_hf_model("qwen3"), tmp_path_factory.mktemp("ckpt")), device="cpu")


def _ids(length, batch=1, seed=0):
    return torch.randint(0, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "attention,chunks",
    [
        (Attention.causal(), [7, 1, 1, 5, 3]),
        (Attention.block_causal(4), [8, 4, 4, 4]),  # whole blocks, aligned to positions
        (Attention.block_causal(4), [4, 4, 4, 3]),  # cached whole blocks, then a partial last block
        (Attention.block_causal(1), [3, 1, 1, 1]),
    ],
    ids=["causal", "block4-aligned", "block4-unaligned", "block1"],
)
def test_prefill_and_cached_steps_equal_full_forward(lm, attention, chunks):
    ids = _ids(sum(chunks), batch=2)
    full = lm.model(ids, attention=attention)
    cache = KVCache.for_model(lm.model, batch_size=2, capacity=sum(chunks))
    start, pieces = 0, []
    for n in chunks:
        pieces.append(lm.model(ids[:, start : start + n], attention=attention, cache=cache))
        start += n
    assert cache.length == sum(chunks)
    assert torch.equal(torch.cat(pieces, dim=1), full) or (torch.cat(pieces, 1) - full).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "attention,sees_future",
    [
        (Attention.causal(), lambda i, j: j > i),
        (Attention.block_causal(4), lambda i, j: j // 4 > i // 4),
        (Attention.bidirectional(), lambda i, j: False),
    ],
    ids=["causal", "block4", "bidirectional"],
)
def test_each_position_depends_only_on_what_its_mask_shows(lm, attention, sees_future):
    ids = _ids(12)
    base = lm.model(ids, attention=attention)
    for j in (1, 5, 10):
        changed = ids.clone()
        changed[0, j] = (changed[0, j] + 1) % 128
        diff = (lm.model(changed, attention=attention) - base).abs().amax(dim=-1)[0]
        for i in range(12):
            if sees_future(i, j):
                assert diff[i] == 0, (i, j)
            else:
                assert diff[i] > 0, (i, j)


def test_read_through_does_not_write_and_trim_forgets(lm):
    attention = Attention.block_causal(4)
    ids = _ids(12)
    cache = KVCache.for_model(lm.model, batch_size=1, capacity=12)
    lm.model(ids[:, :8], attention=attention, cache=cache)
    peek = lm.model(ids[:, 8:], attention=attention, cache=cache, write_cache=False)
    assert cache.length == 8
    written = lm.model(ids[:, 8:], attention=attention, cache=cache)
    assert cache.length == 12
    assert (peek - written).abs().max() <= 1e-6
    cache.trim(8)
    again = lm.model(ids[:, 8:], attention=attention, cache=cache)
    assert (again - written).abs().max() <= 1e-6
    with pytest.raises(InvalidArgumentError, match="length"):
        cache.trim(13)


def test_cache_overflow_and_batch_mismatch_are_named(lm):
    cache = KVCache.for_model(lm.model, batch_size=1, capacity=4)
    with pytest.raises(InvalidArgumentError, match="input_ids"):
        lm.model(_ids(5), cache=cache)
    with pytest.raises(InvalidArgumentError, match="input_ids"):
        lm.model(_ids(2, batch=2), cache=cache)


@pytest.mark.parametrize("attention", [Attention.causal(), Attention.block_causal(4), Attention.bidirectional()])
def test_left_padding_equals_unpadded_row(lm, attention):
    """A left-padded row (padding masked out, positions counted from its first real token) equals the row alone."""
    short, pad = _ids(8, seed=3), 3
    padded = torch.cat((torch.zeros(1, pad, dtype=torch.long), short), dim=1)
    mask = torch.tensor([[False] * pad + [True] * 8])
    positions = (torch.arange(8 + pad) - pad).clamp(min=0)[None]
    alone = lm.model(short, attention=attention)
    cache = KVCache.for_model(lm.model, batch_size=1, capacity=16)
    got = lm.model(padded, positions=positions, attention=attention, cache=cache, token_mask=mask)
    assert (got[:, pad:] - alone).abs().max() <= 1e-5
    if attention.kind == "bidirectional":
        return  # cached keys of a bidirectional model are an approximation once more tokens arrive
    more = _ids(2, seed=4)
    step = lm.model(more, positions=torch.tensor([[8, 9]]), attention=attention, cache=cache)
    assert (step - lm.model(torch.cat((short, more), 1), attention=attention)[:, 8:]).abs().max() <= 1e-5


def test_attention_rejects_bad_block_size():
    with pytest.raises(InvalidArgumentError, match="block_size"):
        Attention.block_causal(0)
    with pytest.raises(InvalidArgumentError, match="block_size"):
        Attention("causal", 4)


def test_reframed_and_joined_rows_attend_as_before(lm):
    """Slots shifted right (empty ones in front), capacity grown, a row added, slots dropped again: every row's next
    step equals the same step over its sequence alone."""
    attention = Attention.causal()
    first, second, more = _ids(6, seed=5), _ids(4, seed=6), _ids(1, batch=2, seed=7)
    cache = KVCache.for_model(lm.model, batch_size=1, capacity=7)
    lm.model(first, attention=attention, cache=cache, token_mask=torch.ones(1, 6, dtype=torch.bool))
    cache.reframe(3, capacity=12)  # three empty slots in front, room for more
    assert (cache.length, cache.capacity) == (9, 12) and not cache.valid[0, :3].any()
    joining = KVCache.for_model(lm.model, batch_size=1, capacity=12)
    pad = 5  # the new row's four tokens take the last slots
    joining.advance(torch.zeros(1, pad, dtype=torch.long), torch.zeros(1, pad, dtype=torch.bool))
    lm.model(second, positions=torch.arange(4)[None], attention=attention, cache=joining,
             token_mask=torch.ones(1, 4, dtype=torch.bool))
    cache.add_rows(joining)
    cache.reframe(-3, capacity=12)  # no row uses the first three slots any more
    assert (cache.length, cache.batch_size) == (6, 2)
    step = lm.model(more, positions=torch.tensor([[6], [4]]), attention=attention, cache=cache,
                    token_mask=torch.ones(2, 1, dtype=torch.bool))
    for row, ids in enumerate((first, second)):
        alone = lm.model(torch.cat((ids, more[row : row + 1]), 1), attention=attention)[:, -1]
        assert (step[row, 0] - alone[0]).abs().max() <= 1e-5, row
    with pytest.raises(InvalidArgumentError, match="slots"):
        cache.add_rows(KVCache.for_model(lm.model, batch_size=1, capacity=12))
    with pytest.raises(InvalidArgumentError, match="left"):
        cache.reframe(-cache.length - 1, capacity=12)


def test_select_rows_compacts_in_place(lm):
    """Rows leaving the batch: the kept rows' keys, values, positions and validity are those they had, the buffers
    are views of the same storage (no new allocation), and bad row lists are refused by name."""
    ids = _ids(5, batch=4)
    cache = KVCache.for_model(lm.model, batch_size=4, capacity=8)
    lm.model(ids, attention=Attention.causal(), cache=cache)
    before = [t.clone() for t in (cache.keys, cache.values, cache.positions, cache.valid)]
    storage = cache.keys.untyped_storage().data_ptr()
    cache.select_rows([0, 2, 3])
    assert cache.batch_size == 3 and cache.keys.untyped_storage().data_ptr() == storage
    for now, then, axis in zip((cache.keys, cache.values, cache.positions, cache.valid), before, (1, 1, 0, 0)):
        assert torch.equal(now, then.index_select(axis, torch.tensor([0, 2, 3])))
    step = lm.model(ids[[0, 2, 3], :1], attention=Attention.causal(), cache=cache)  # decoding goes on
    alone = lm.model(torch.cat((ids[[0, 2, 3]], ids[[0, 2, 3], :1]), 1), attention=Attention.causal())[:, -1:]
    torch.testing.assert_close(step, alone, atol=1e-5, rtol=1e-5)
    for bad in ([2, 0], [0, 0], [0, 7]):
        with pytest.raises(InvalidArgumentError) as info:
            cache.select_rows(bad)
        assert info.value.parameter == "rows"
