"""The block-diffusion training layout: mask shape and contents, complementary masks, the logit-shift alignment, and
that the noisy copy sees exactly what the decode loop shows the model."""

import torch

from blockgen.adapt.layout import build_batch, draw_masks, predictor_index, training_mask
from blockgen.models.attention import Attention


def test_mask_shape_and_contents():
    mask = training_mask(6, 2)[0, 0]
    assert mask.shape == (12, 12)
    noisy, clean = range(0, 6), range(6, 12)
    for q in range(6):
        for k in range(6):
            qb, kb = q // 2, k // 2
            assert mask[noisy[q], noisy[k]] == (qb == kb), (q, k)  # bidirectional inside the block only
            assert mask[noisy[q], clean[k]] == (kb < qb), (q, k)  # the clean past, never its own clean block
            assert mask[clean[q], clean[k]] == (kb <= qb), (q, k)  # block-causal clean stream
            assert not mask[clean[q], noisy[k]]  # the clean stream never sees noise


def test_mask_hides_padding_keys_and_keeps_padded_rows_attending():
    valid = torch.tensor([[True, True, True, False]])
    mask = training_mask(4, 2, valid)[0, 0]
    assert mask.shape == (8, 8)
    assert not mask[:3, 3].any() and not mask[4:7, 7].any()  # no valid query sees a padded key
    assert mask[3].all() and mask[7].all()  # padded queries see everything (no empty softmax row)


def test_complementary_masks_cover_every_maskable_position_once():
    g = torch.Generator().manual_seed(0)
    maskable = torch.rand(5, 37, generator=torch.Generator().manual_seed(1)) > 0.3
    masks = draw_masks(maskable, 4, g)
    first, second = masks[:5], masks[5:]
    assert torch.equal(first | second, maskable)
    assert not (first & second).any()


def test_noise_level_is_drawn_per_block():
    g = torch.Generator().manual_seed(0)
    masks = draw_masks(torch.ones(400, 64, dtype=torch.bool), 8, g)[:400].float()
    per_block = masks.view(400, 8, 8).mean(-1)  # each block's masked fraction follows its own t
    assert per_block.std() > 0.2  # one global rate would give ~0.18 for blocks of 8
    assert 0.4 < masks.mean() < 0.6


def test_suffix_blocks_mask_a_tail_in_each_copy():
    maskable = torch.ones(300, 32, dtype=torch.bool)
    maskable[:, 0] = False
    masks = draw_masks(maskable, 8, torch.Generator().manual_seed(0), suffix_share=1.0)
    assert not (masks & ~maskable.repeat(2, 1)).any()
    blocks = masks.view(600, 4, 8)
    assert blocks[..., -1].all()  # every block's last position is masked in both copies
    for row in blocks.reshape(-1, 8)[:400]:  # a suffix: once masked, masked to the block's end
        first = int(row.nonzero()[0])
        assert row[first:].all() and not row[1:first].any()
    cuts = blocks[:, 1:].float().sum(-1)  # the number masked is uniform over 1..8 (blocks 1-3: fully maskable)
    assert cuts.min() == 1 and cuts.max() == 8 and 4.0 < cuts.mean() < 5.0
    first, second = masks[:300], masks[300:]
    assert (first != second).any()  # each copy draws its own cut (no complement)


def test_suffix_share_mixes_and_zero_draws_as_before():
    maskable = torch.ones(400, 64, dtype=torch.bool)
    plain = draw_masks(maskable, 8, torch.Generator().manual_seed(3))
    assert torch.equal(draw_masks(maskable, 8, torch.Generator().manual_seed(3), suffix_share=0.0), plain)
    mixed = draw_masks(maskable, 8, torch.Generator().manual_seed(3), suffix_share=0.5).view(800, 8, 8)
    complementary = (mixed[:400] ^ mixed[400:]).all(-1)  # the two copies' blocks partition the block
    assert 0.4 < complementary.float().mean() < 0.6  # about half the blocks are drawn as before


def test_shift_alignment():
    assert predictor_index(8, 4, True).tolist() == [-1, 0, 1, 2, 11, 4, 5, 6]  # block starts read the clean copy
    assert predictor_index(8, 1, True).tolist() == [-1, 8, 9, 10, 11, 12, 13, 14]  # block 1: plain AR
    assert predictor_index(8, 4, False).tolist() == list(range(8))


def _decoder(seed=0):
    from helpers import tiny_hf_model

    from blockgen.models.config import config_from_dict
    from blockgen.models.decoder import Decoder

    hf = tiny_hf_model(seed=seed)
    model = Decoder(config_from_dict(hf.config.to_dict()))
    model.load_state_dict(hf.state_dict(), strict=False)
    return model.eval()


def _batch(block, shift, rows=2, length=12, prompt=3):
    ids = torch.randint(5, 200, (rows, length), generator=torch.Generator().manual_seed(3))
    valid = torch.ones_like(ids, dtype=torch.bool)
    maskable = valid.clone()
    maskable[:, :prompt] = False
    return ids, build_batch(ids, valid, maskable, block_size=block, mask_token_id=3, logit_shift=shift,
                            generator=torch.Generator().manual_seed(4))


@torch.no_grad()
def test_block_size_one_with_shift_is_the_ar_loss():
    model = _decoder()
    ids, batch = _batch(1, True)
    hidden = model.hidden_states(batch.input_ids, positions=batch.positions, attn_mask=batch.attn_mask)
    got = model.logits(hidden[batch.target_rows, batch.target_cols])
    causal = model(ids.repeat(2, 1))  # causal logits at i-1 predict token i
    want = causal[batch.target_rows, batch.target_cols - ids.shape[1]]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert batch.targets.tolist() == ids.repeat(2, 1)[batch.target_rows, batch.target_cols - ids.shape[1] + 1].tolist()


@torch.no_grad()
def test_noisy_copy_sees_what_the_decode_loop_shows():
    """Block b of the noisy copy must get the hidden states a block-causal pass over [clean blocks < b, noisy block b]
    gives: the state the engine is in while it refines block b over a cache of finished blocks."""
    model = _decoder()
    block = 4
    ids, batch = _batch(block, True, length=12)
    hidden = model.hidden_states(batch.input_ids, positions=batch.positions, attn_mask=batch.attn_mask)
    noisy = batch.input_ids[:, :12]
    clean = batch.input_ids[:, 12:]
    for b in range(3):
        lo, hi = b * block, (b + 1) * block
        canvas = torch.cat([clean[:, :lo], noisy[:, lo:hi]], 1)
        reference = model.hidden_states(canvas, attention=Attention.block_causal(block))
        torch.testing.assert_close(hidden[:, lo:hi], reference[:, lo:hi], atol=1e-5, rtol=1e-5)
        # the last clean position before the block (its first token's predictor) equals the finished context's
        if lo:
            torch.testing.assert_close(hidden[:, 12 + lo - 1], reference[:, lo - 1], atol=1e-5, rtol=1e-5)


def test_targets_are_the_masked_clean_tokens_only():
    ids, batch = _batch(4, False)
    rows, cols = batch.masked.nonzero(as_tuple=True)
    assert batch.targets.tolist() == ids.repeat(2, 1)[rows, cols].tolist()
    assert not batch.masked[:, :3].any()  # prompt tokens are never masked
    noisy = batch.input_ids[:, :12]
    assert torch.equal(noisy == 3, batch.masked)


@torch.no_grad()
def test_packed_row_is_each_example_alone():
    """Two examples packed in one row (segments, restarted positions, aligned starts) get the hidden states each
    gets alone in the unpacked layout, noisy and clean copies both: nothing leaks across segments."""
    from blockgen.adapt.data import Example, collate_packed

    model, block = _decoder(), 4
    gen = torch.Generator().manual_seed(5)
    a = Example(tuple(torch.randint(5, 200, (3,), generator=gen).tolist()),
                tuple(torch.randint(5, 200, (9,), generator=gen).tolist()))
    b = Example(tuple(torch.randint(5, 200, (2,), generator=gen).tolist()),
                tuple(torch.randint(5, 200, (5,), generator=gen).tolist()))
    ids, valid, maskable, positions, segments = collate_packed([[a, b]], 24, 0, align=block)
    assert segments[0].tolist() == [0] * 12 + [1] * 7 + [-1] * 5  # b starts at 12, a multiple of the block
    assert positions[0, 12:19].tolist() == list(range(7))
    assert maskable[0].nonzero().flatten().tolist() == list(range(3, 12)) + list(range(14, 19))
    batch = build_batch(ids, valid, maskable, block_size=block, mask_token_id=3, logit_shift=True,
                        generator=torch.Generator().manual_seed(4), positions=positions, segments=segments)
    hidden = model.hidden_states(batch.input_ids, positions=batch.positions, attn_mask=batch.attn_mask)
    for lo, n in ((0, 12), (12, 7)):
        noisy, clean = batch.input_ids[:, lo:lo + n], batch.input_ids[:, 24 + lo:24 + lo + n]
        alone = torch.cat([noisy, clean], 1)
        reference = model.hidden_states(alone, positions=torch.arange(n).repeat(2)[None].expand(2, -1),
                                        attn_mask=training_mask(n, block))
        torch.testing.assert_close(hidden[:, lo:lo + n], reference[:, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hidden[:, 24 + lo:24 + lo + n], reference[:, n:], atol=1e-5, rtol=1e-5)
    # targets: only completion tokens, and a segment's first token never (nothing in it predicts that)
    assert set(batch.target_cols.tolist()) <= set(range(48))
    assert not batch.masked[:, [0, 12]].any()


def test_gated_blocks_count_from_each_answer_start():
    """Gated layout: a mask sees its own segment's clean keys before its block, and its block's masks; blocks start
    where each answer starts (the drafting loop appends its masks right after the last token)."""
    from blockgen.adapt.layout import gated_mask

    length = 20
    segments = torch.tensor([[0] * 12 + [1] * 8])
    valid = torch.ones(1, length, dtype=torch.bool)
    valid[0, 19] = False
    masked = torch.zeros(1, length, dtype=torch.bool)
    masked[0, 3:9] = True  # segment 0: a prompt of 3, an answer of 6 (then padding to the segment's end)
    masked[0, 14:19] = True  # segment 1: a prompt of 2, an answer of 5
    mask = gated_mask(masked, 4, valid, segments)[0, 0]

    def sees(query: int) -> tuple[list[int], list[int]]:
        row = mask[query]
        return row[length:].nonzero()[:, 0].tolist(), row[:length].nonzero()[:, 0].tolist()

    assert sees(3) == ([0, 1, 2], [3, 4, 5, 6])  # the first block: the whole prompt clean, four masks
    assert sees(8) == ([0, 1, 2, 3, 4, 5, 6], [7, 8])
    assert sees(15) == ([12, 13], [14, 15, 16, 17])
    assert sees(18) == ([12, 13, 14, 15, 16, 17], [18])
    clean = mask[length + 15]
    assert clean[length:].nonzero()[:, 0].tolist() == [12, 13, 14, 15] and not clean[:length].any()  # causal
