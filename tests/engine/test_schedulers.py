"""Schedulers on synthetic logits: quotas, threshold with its top-1 guarantee, the factor rule, editing, configs."""

import pytest
import torch

from blockgen.engine import FactorScheduler, LowConfidenceScheduler, ThresholdScheduler, make_scheduler
from blockgen.engine.sampling import confidence_of, sample_tokens
from blockgen.errors import InvalidArgumentError

MASK = 0


def _logits_with_confidence(probs: list[float], vocab: int = 16) -> torch.Tensor:
    """(1, L, V) logits whose argmax at position i is token i + 1 with probability probs[i]."""
    rows = []
    for i, p in enumerate(probs):
        row = torch.full((vocab,), (1 - p) / (vocab - 1))
        row[i + 1] = p
        rows.append(row.log())
    return torch.stack(rows)[None]


def _step(scheduler, probs, sample=None, step=0):
    sample = torch.full((1, len(probs)), MASK) if sample is None else sample
    return scheduler.step(_logits_with_confidence(probs), step, sample, mask_token_id=MASK)


def test_low_confidence_spreads_the_quota_like_llada():
    scheduler = LowConfidenceScheduler()
    scheduler.set_timesteps(4)
    probs = [0.5, 0.9, 0.2, 0.7, 0.6, 0.3, 0.8, 0.4, 0.1, 0.95]
    sample = torch.full((1, 10), MASK)
    committed_per_step = []
    for t in range(4):
        out = scheduler.step(_logits_with_confidence(probs), t, sample, mask_token_id=MASK)
        committed_per_step.append(int(out.transfer_index.sum()))
        if t == 0:  # the most confident positions go first
            assert out.transfer_index[0].nonzero().flatten().tolist() == [1, 6, 9]
        sample = out.prev_sample
    assert committed_per_step == [3, 3, 2, 2]  # 10 over 4 steps, remainder first
    assert (sample != MASK).all()


def test_random_order_uses_the_generator():
    scheduler = LowConfidenceScheduler(confidence="random")
    scheduler.set_timesteps(2)
    picks = [scheduler.step(_logits_with_confidence([0.5] * 8), 0, torch.full((1, 8), MASK), mask_token_id=MASK,
                            generator=torch.Generator().manual_seed(s)).transfer_index for s in (1, 1, 2)]
    assert torch.equal(picks[0], picks[1]) and int(picks[0].sum()) == 4
    assert not torch.equal(picks[0], picks[2])


def test_threshold_commits_all_confident_and_at_least_one():
    scheduler = ThresholdScheduler(threshold=0.75)
    out = _step(scheduler, [0.5, 0.9, 0.8, 0.2])
    assert out.transfer_index[0].tolist() == [False, True, True, False]
    out = _step(scheduler, [0.3, 0.6, 0.2, 0.5])  # nothing passes: the top one is committed anyway
    assert out.transfer_index[0].tolist() == [False, True, False, False]
    done = torch.tensor([[5, MASK, 7, MASK]])
    out = _step(scheduler, [0.99, 0.3, 0.99, 0.4], sample=done)  # committed positions are not candidates
    assert out.transfer_index[0].tolist() == [False, False, False, True]
    assert out.prev_sample[0].tolist() == [5, MASK, 7, 4]


def test_factor_rule():
    # sorted confidences 0.95, 0.8, 0.7, 0.2; with factor 1: thresholds 1 - 1/(n+1) = 0.5, 0.667, 0.75, 0.8
    out = _step(FactorScheduler(factor=1.0), [0.7, 0.95, 0.2, 0.8])
    assert out.transfer_index[0].tolist() == [False, True, False, True]  # 0.95 >= .5, 0.8 >= .667, 0.7 < .75
    out = _step(FactorScheduler(factor=3.0), [0.7, 0.95, 0.2, 0.8])  # thresholds -0.5, 0, 0.25, 0.4
    assert out.transfer_index[0].tolist() == [True, True, False, True]
    out = _step(FactorScheduler(factor=0.01), [0.3, 0.2, 0.1, 0.25])  # nothing passes: at least one
    assert out.transfer_index[0].tolist() == [True, False, False, False]


def test_margin_and_entropy_confidences():
    logits = torch.tensor([[[4.0, 3.9, 0.0], [2.0, 0.0, 0.0]]]).log_softmax(-1)
    tokens = logits.argmax(-1)
    margin = confidence_of(logits, tokens, "margin")
    entropy = confidence_of(logits, tokens, "entropy")
    assert margin[0, 1] > margin[0, 0]  # a clear winner beats a near tie
    assert entropy[0, 1] > entropy[0, 0] and (entropy <= 0).all()


def test_editing_replaces_confident_changes_of_committed_tokens():
    scheduler = ThresholdScheduler(threshold=0.9, editing_threshold=0.6)
    sample = torch.tensor([[9, 2, MASK, 9]])  # position 1 already holds its prediction (2)
    out = _step(scheduler, [0.7, 0.95, 0.95, 0.5], sample=sample)
    assert out.editing_transfer_index[0].tolist() == [True, False, False, False]  # 0.7 > 0.6; 0.5 is not
    assert out.transfer_index[0].tolist() == [False, False, True, False]
    assert out.prev_sample[0].tolist() == [1, 2, 3, 9]
    protected = scheduler.step(_logits_with_confidence([0.7, 0.95, 0.95, 0.5]), 0, sample, mask_token_id=MASK,
                               prompt_mask=torch.tensor([True, False, False, False]))
    assert not protected.editing_transfer_index.any()


def test_sampling_greedy_temperature_topk_topp():
    logits = torch.tensor([[3.0, 2.0, 1.0, -1.0]]).repeat(2000, 1)
    assert (sample_tokens(logits) == 0).all()
    draws = sample_tokens(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.04)
    again = sample_tokens(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert set(sample_tokens(logits, temperature=1.0, top_k=2).tolist()) <= {0, 1}
    assert set(sample_tokens(logits, temperature=1.0, top_p=0.5).tolist()) == {0}
    with pytest.raises(InvalidArgumentError, match="temperature"):
        sample_tokens(logits, temperature=-1.0)


def test_configs_save_and_load(tmp_path):
    for scheduler in (ThresholdScheduler(threshold=0.8, editing_threshold=0.5), FactorScheduler(factor=2.0),
                      LowConfidenceScheduler(confidence="margin")):
        scheduler.save_pretrained(tmp_path / type(scheduler).__name__)
        loaded = type(scheduler).from_pretrained(tmp_path / type(scheduler).__name__)
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(loaded.config) == public(scheduler.config)
        assert (tmp_path / type(scheduler).__name__ / "scheduler_config.json").is_file()


@pytest.mark.parametrize(
    "make,parameter",
    [(lambda: ThresholdScheduler(threshold=1.5), "threshold"), (lambda: FactorScheduler(factor=0), "factor"),
     (lambda: LowConfidenceScheduler(confidence="vibes"), "confidence"),
     (lambda: ThresholdScheduler(editing_threshold=2.0), "editing_threshold"),
     (lambda: make_scheduler("greedy"), "scheduler")],
)
def test_bad_scheduler_settings(make, parameter):
    with pytest.raises(InvalidArgumentError) as info:
        make()
    assert info.value.parameter == parameter


@pytest.mark.parametrize("scale", [8.0, 0.05], ids=["narrow-nucleus", "wider-than-the-top-k"])
def test_top_p_keeps_exactly_the_sorted_nucleus(scale):
    """The top-k shortcut keeps the same tokens as ranking the whole vocabulary (peaked rows: the nucleus lies in the
    top tokens; flat rows: it does not, and the full sort runs)."""
    from blockgen.engine.sampling import _nucleus

    def filter_top_p(logits, top_p):  # the nucleus as a mask over the vocabulary
        ranked, order = _nucleus(logits, top_p)
        return torch.full_like(logits, float("-inf")).scatter(-1, order, ranked)

    logits = torch.randn(3, 2, 5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale
    for top_p in (0.5, 0.9, 0.95):
        ranked, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = ranked.softmax(-1).cumsum(-1)
        keep_sorted = torch.cat([torch.ones_like(cumulative[..., :1], dtype=torch.bool),
                                 cumulative[..., :-1] <= top_p], -1)
        expected = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        kept = filter_top_p(logits, top_p) > float("-inf")
        assert torch.equal(kept, expected), top_p
    assert (filter_top_p(logits, 0.9) > float("-inf")).sum(-1).max() > (256 if scale < 1 else 0)


def test_top_p_draws_follow_the_renormalized_nucleus():
    """Draws among the ranked nucleus only: each kept token as often as its probability renormalized over the
    nucleus, none outside it, at any temperature the same support."""
    base = torch.full((600,), -8.0)
    base[:4] = torch.tensor([2.0, 1.5, 1.0, 0.2])
    logits = base.repeat(4000, 1)
    draws = sample_tokens(logits, temperature=1.0, top_p=0.8, generator=torch.Generator().manual_seed(1))
    probs = base.double().softmax(-1)
    kept = int((probs.cumsum(-1) <= 0.8).sum()) + 1  # up to and including the token that crosses 0.8
    assert set(draws.tolist()) == set(range(kept))
    want = probs[:kept] / probs[:kept].sum()
    freq = torch.bincount(draws, minlength=kept)[:kept].double() / len(draws)
    assert torch.allclose(freq, want, atol=0.03), (freq, want)
