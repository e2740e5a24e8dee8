"""Masks: what a pass needs follows from its shapes when positions continue the cache and nothing is padding (no mask
tensor at all in the common decode steps), and equals the dense mask it replaces."""

import pytest
import torch
import torch.nn.functional as F
from helpers import save_checkpoint, tiny_hf_model

import blockgen
from blockgen.models import Attention, KVCache, build_mask, structural_mask
from blockgen.models.attention import CAUSAL, DENSE


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return blockgen.load(save_checkpoint(tiny_hf_model("qwen3"), tmp_path_factory.mktemp("ckpt")), device="cpu")


@pytest.mark.parametrize("attention", [Attention.causal(), Attention.bidirectional(), Attention.block_causal(1),
                                       Attention.block_causal(3), Attention.block_causal(4)],
                         ids=["causal", "bidirectional", "block1", "block3", "block4"])
def test_structural_mask_equals_the_dense_mask(attention):
    for start in range(10):
        for length in range(1, 10):
            queries = torch.arange(start, start + length)[None]
            keys = torch.arange(start + length)[None]
            dense = build_mask(attention, queries, keys, None, None)
            dense = torch.ones(1, 1, length, start + length, dtype=torch.bool) if dense is None else dense
            shape = structural_mask(attention, start, length)
            if shape is None:
                assert bool(dense.all()), (start, length)
            elif shape == CAUSAL:  # SDPA's is_causal: query i sees keys 0..i (top left), right only without cache
                assert start == 0 and torch.equal(dense[0, 0], torch.ones(length, length, dtype=torch.bool).tril())
            else:
                assert shape == DENSE and not bool(dense.all()), (start, length)


@pytest.mark.parametrize("attention,chunks", [(Attention.causal(), [6, 1, 1, 3]),
                                              (Attention.block_causal(4), [8, 4, 2, 2])],
                         ids=["causal", "block4"])
def test_passes_without_a_mask_equal_passes_with_the_dense_one(lm, attention, chunks):
    """Default positions (the mask follows from shapes) against the same positions given (the dense mask)."""
    ids = torch.randint(0, 128, (2, sum(chunks)), generator=torch.Generator().manual_seed(0))
    caches = [KVCache.for_model(lm.model, 2, sum(chunks)) for _ in range(2)]
    start = 0
    for n in chunks:
        piece = ids[:, start : start + n]
        elided = lm.model(piece, attention=attention, cache=caches[0])
        given = lm.model(piece, positions=torch.arange(start, start + n).expand(2, n), attention=attention,
                         cache=caches[1])
        torch.testing.assert_close(elided, given, atol=1e-5, rtol=1e-5)
        start += n


def test_a_padded_cache_keeps_the_dense_mask(lm):
    """A cached padding slot must stay unseen, default positions or not."""
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 0] = False  # row 1's first slot is padding
    cache = KVCache.for_model(lm.model, 2, 6)
    lm.model(ids[:, :5], attention=Attention.causal(), cache=cache, token_mask=valid)
    assert cache.padded
    step = lm.model(ids[:, 5:], attention=Attention.causal(), cache=cache)
    alone = lm.model(ids[1:, 1:], attention=Attention.causal())[:, -1:]  # row 1 without its padding
    torch.testing.assert_close(step[1:], alone, atol=1e-5, rtol=1e-5)


def test_ar_decode_steps_give_attention_no_mask(lm, monkeypatch):
    """In AR decoding with the exact cache, the prompt runs with SDPA's causal rule and every step after it with no
    mask at all (the fused kernels' fast path), and the text equals a decode whose passes carry dense masks."""
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((q.shape[2], attn_mask is None, is_causal))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    tokens = lm.generate_results("The tide", max_new_tokens=6, block_size=1)[0].tokens
    layers = lm.model.config.num_layers
    prefill, steps = calls[:layers], calls[layers:]
    assert all(mask_free and causal for _, mask_free, causal in prefill)
    assert steps and all(t == 1 and mask_free and not causal for t, mask_free, causal in steps)
    monkeypatch.setattr(F, "scaled_dot_product_attention", real)
    padded = lm.generate_results(["The tide", "A much longer prompt than the first"], max_new_tokens=6,
                                 block_size=1)[0].tokens  # left padding: dense masks in every pass
    assert padded == tokens
