"""The drafting loop of gated adapters on tiny real models: the base's text token for token (greedy, with a
repetition penalty, stop strings and limits), several tokens a forward once the drafts have learned the data, the
gate closed everywhere but at masks, and the training layout's masks seeing what the loop's masks see."""

import random

import pytest
import torch
from helpers import make_tokenizer, save_checkpoint, tiny_hf_model

import blockgen
from blockgen.adapt import AdaptConfig, adapt
from blockgen.adapt.layout import gated_batch
from blockgen.engine.drafting import _draft_mask
from blockgen.errors import ConfigError, InvalidArgumentError
from blockgen.models.cache import KVCache
from blockgen.models.family import family_from_config

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _alphabet_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(LETTERS[(start + i) % 26] for i in range(40)) for start in (rng.randrange(26) for _ in range(n))]


@pytest.fixture(scope="module")
def alphabet_base(tmp_path_factory):
    """A tiny causal LM trained (plain next-token loss) to continue the alphabet: a base whose text can be drafted."""
    model, tok = tiny_hf_model(), make_tokenizer()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    lines = _alphabet_lines(64)
    torch.manual_seed(0)
    for step in range(150):
        batch = torch.tensor([tok(line)["input_ids"][:32] for line in lines[step % 8 * 8 : step % 8 * 8 + 8]])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("alphabet-base") / "ckpt")


@pytest.fixture(scope="module")
def drafter(alphabet_base, tmp_path_factory):
    """A gated LoRA adapter of that base, trained on the alphabet to draft blocks of 4."""
    root = tmp_path_factory.mktemp("drafter")
    data = root / "alphabet.txt"
    data.write_text("\n".join(_alphabet_lines(300, seed=1)))
    adapt(AdaptConfig.build(base=str(alphabet_base), data=[str(data)], steps=150, batch_size=8, seq_len=48, lr=1e-2,
                            lora_rank=8, block_sizes=[4], checkpoint_every=1000, device="cpu", warmup_steps=5,
                            gated=True), root / "run")
    return root / "run"


PROMPTS = ["klmnopq", "defghij", "uvwxyza", "the "]


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_drafting_writes_the_base_text_several_tokens_a_forward(alphabet_base, drafter, quantize):
    base = blockgen.load(alphabet_base, device="cpu", dtype="float32", quantize=quantize)
    lm = blockgen.load(drafter, device="cpu", dtype="float32", quantize=quantize)
    assert lm.family.gated and lm.family.attention.value == "causal" and lm.family.block_size == 4
    assert "# Gated drafting adapter of" in (drafter / "MODEL_CARD.md").read_text()
    per_forward = []
    for prompt in PROMPTS:
        ar = base.generate_results(prompt, max_new_tokens=24)[0]
        drafted = lm.generate_results(prompt, max_new_tokens=24, draft_threshold=0.5)[0]
        assert drafted.tokens == ar.tokens and drafted.text == ar.text
        assert drafted.stats.forward_passes * drafted.stats.tokens_per_forward == len(drafted.tokens)
        per_forward.append(drafted.stats.tokens_per_forward)
    assert sum(per_forward[:3]) / 3 > 2.0, per_forward  # the alphabet is drafted several letters at a time
    # a batch decodes as its rows would alone
    assert lm.generate(PROMPTS, max_new_tokens=24, draft_threshold=0.5) == base.generate(PROMPTS, max_new_tokens=24)


def test_a_tree_of_drafts_keeps_drafting_after_a_rejection(alphabet_base, drafter):
    base = blockgen.load(alphabet_base, device="cpu", dtype="float32", quantize=None)
    lm = blockgen.load(drafter, device="cpu", dtype="float32", quantize=None)
    forwards = {False: 0, True: 0}
    for prompt in ["the the", "zzzz", "abcxyz", "hello"]:  # text the alphabet drafter often gets wrong
        ar = base.generate_results(prompt, max_new_tokens=24)[0]
        for tree in (False, True):
            drafted = lm.generate_results(prompt, max_new_tokens=24, draft_threshold=0.0, draft_tree=tree)[0]
            assert drafted.tokens == ar.tokens, (prompt, tree)
            forwards[tree] += drafted.stats.forward_passes
    assert forwards[True] < forwards[False], forwards


def test_gate_closed_is_the_base(alphabet_base, drafter):
    base = blockgen.load(alphabet_base, device="cpu", dtype="float32", quantize=None)
    lm = blockgen.load(drafter, device="cpu", dtype="float32", quantize=None)
    ids = torch.tensor([lm.encode("mnopqrs")])
    assert torch.equal(lm.model(ids), base.model(ids))
    opened = lm.model(ids, lora_gate=torch.ones_like(ids, dtype=torch.bool))
    assert not torch.allclose(opened, base.model(ids), atol=1e-3)  # the adapter does act where the gate opens


def test_a_tied_base_keeps_its_head(tmp_path):
    """The adapter's mask embedding replaces a row of a tied base's embedding, which is also its LM head: a gated
    load keeps the base's head apart, so every logit, the mask token's column too, stays the base's."""
    base_dir = save_checkpoint(tiny_hf_model(tie=True), tmp_path / "tied")
    data = tmp_path / "alphabet.txt"
    data.write_text("\n".join(_alphabet_lines(50)))
    adapt(AdaptConfig.build(base=str(base_dir), data=[str(data)], steps=10, batch_size=4, seq_len=32, lr=1e-2,
                            lora_rank=4, block_sizes=[4], checkpoint_every=1000, device="cpu", warmup_steps=2,
                            gated=True), tmp_path / "run")
    for quantize in (None, "int8"):
        base = blockgen.load(base_dir, device="cpu", dtype="float32", quantize=quantize)
        lm = blockgen.load(tmp_path / "run", device="cpu", dtype="float32", quantize=quantize)
        ids = torch.tensor([lm.encode("mnopqrs")])
        assert torch.equal(lm.model(ids), base.model(ids)), quantize
        opened = lm.model(ids, lora_gate=ids.shape[1] - 2)
        assert torch.equal(opened[:, :-2], base.model(ids)[:, :-2])  # an int gate: the last positions only
        assert not torch.equal(opened[:, -2:], base.model(ids)[:, -2:])


def test_penalty_stops_and_limits_match_the_ar_loop(alphabet_base, drafter):
    base = blockgen.load(alphabet_base, device="cpu", dtype="float32", quantize=None)
    lm = blockgen.load(drafter, device="cpu", dtype="float32", quantize=None)
    for options in ({"repetition_penalty": 1.3}, {"repetition_penalty": 1.5, "penalty_scope": "generated"},
                    {"dry_multiplier": 1.0}, {"dry_multiplier": 3.0, "dry_allowed_length": 1, "penalty_scope": "generated"},
                    {"stop": ("uv",)}, {"max_new_tokens": 5}):
        options = {"max_new_tokens": 30} | options
        for prompt in PROMPTS[:3]:
            ar = base.generate_results(prompt, **options)[0]
            drafted = lm.generate_results(prompt, draft_threshold=0.3, **options)[0]
            assert (drafted.tokens, drafted.finish_reason) == (ar.tokens, ar.finish_reason), options
            if "dry_multiplier" in options:  # the alphabet comes round again: DRY changes what is written
                assert ar.tokens != base.generate_results(prompt, max_new_tokens=30)[0].tokens
    # no draft ever proposed (threshold 1): sampling draws the same random stream as the AR loop
    for options in ({"temperature": 3.0, "seed": 3}, {"temperature": 2.0, "top_k": 50, "top_p": 0.95, "seed": 4}):
        ar = base.generate_results("xyz", max_new_tokens=20, **options)[0]
        assert len(set(ar.tokens)) > 10  # a random stream, not the alphabet
        assert lm.generate_results("xyz", max_new_tokens=20, draft_threshold=1.0, **options)[0].tokens == ar.tokens


def test_training_layout_masks_see_what_the_loop_masks_see(drafter):
    """A mask of the gated layout's block b gives the logits the loop's mask gives after the same text."""
    lm = blockgen.load(drafter, device="cpu", dtype="float32", quantize=None)
    model, mask_id, size = lm.model, lm.family.mask_token_id, 4
    ids = torch.tensor([lm.encode("bcdefghijklmnopqrstu")])
    length = ids.shape[1]
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :3] = False  # a prompt of 3 tokens
    batch = gated_batch(ids, torch.ones_like(maskable), maskable, block_size=size, mask_token_id=mask_id)
    assert torch.equal(batch.gate[0, :length], maskable[0] & (torch.arange(length) > 0))
    assert not batch.gate[0, length:].any()
    assert torch.equal(batch.targets, ids[0, batch.target_cols + 1])
    with torch.no_grad():
        hidden = model.hidden_states(batch.input_ids, positions=batch.positions, attn_mask=batch.attn_mask,
                                     lora_gate=batch.gate)
        layout = model.logits(hidden)[0]
        for start in (3, 7, 11):  # blocks from the answer's start: the loop's [t | 4 masks] after the text before
            cache = KVCache.for_model(model, 1, 32)
            model(ids[:, : start - 1], cache=cache)
            step = torch.tensor([[ids[0, start - 1].item()] + [mask_id] * size])
            gate = torch.tensor([[False] + [True] * size])
            loop = model(step, cache=cache, attn_mask=_draft_mask(start - 1, 1, size, "cpu"), lora_gate=gate)[0]
            assert torch.allclose(loop[1:], layout[start : start + size], atol=1e-4)
            assert torch.allclose(loop[0], layout[length + start - 1], atol=1e-4)  # the base's next token: clean copy


def test_gated_record_is_checked(tmp_path):
    raw = {"model_type": "llama", "blockgen": {"gated": True, "mask_token_id": 3}}
    assert family_from_config(raw).gated
    for bad in ({"gated": "yes", "mask_token_id": 3}, {"gated": True, "attention": "block_causal", "mask_token_id": 3},
                {"gated": True}):
        with pytest.raises(ConfigError, match="gated"):
            family_from_config({"model_type": "llama", "blockgen": bad})
    with pytest.raises(InvalidArgumentError, match="gated"):
        AdaptConfig.build(base="default", distill=4, gated=True, suffix_share=0.5)
    with pytest.raises(InvalidArgumentError, match="gated"):
        AdaptConfig.build(base="default", distill=4, gated=True, lora_rank=None)


def test_lookahead_scores_a_drafter_in_its_own_layout(alphabet_base, drafter):
    from blockgen.adapt.lookahead import draft_runs, lookahead

    base = blockgen.load(alphabet_base, device="cpu", dtype="float32", quantize=None)
    lm = blockgen.load(drafter, device="cpu", dtype="float32", quantize=None)
    texts = [(ids, base.generate_results(ids, max_new_tokens=20)[0].tokens) for ids in map(base.encode, PROMPTS[:3])]
    offsets = lookahead(lm, texts, threshold=0.5)
    assert [o.offset for o in offsets] == [1, 2, 3, 4, 5]
    assert offsets[0].right == 1.0  # offset 1 is the base's own next token: its greedy text, always
    assert offsets[1].right > 0.8  # the alphabet's next-but-one letter is drafted
    runs = draft_runs(lm, texts, threshold=0.5)
    assert abs(sum(runs.values()) - 1) < 1e-9 and max(runs, key=runs.get) == 4  # mostly all four drafts kept
    with pytest.raises(InvalidArgumentError, match="gated"):
        draft_runs(base, texts)


def test_speculative_sampling_writes_the_base_distribution():
    """Whatever the drafts' distribution, a token written by speculate() (kept draft or replacement) follows p."""
    from blockgen.engine.drafting import speculate

    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]], dtype=torch.float64)
    for q in ([[0.1, 0.1, 0.1, 0.2, 0.5]], [[0.5, 0.3, 0.15, 0.05, 0.0]], [[0.0, 0.0, 1.0, 0.0, 0.0]]):
        q = torch.tensor(q, dtype=torch.float64)
        counts, kept_share, n = torch.zeros(5), 0, 20000
        for _ in range(n):
            draft = int(torch.multinomial(q[0], 1, generator=gen))
            kept, token = speculate(p, q, torch.tensor([draft]), gen)
            counts[draft if kept else token] += 1
            kept_share += int(kept)
        assert torch.allclose(counts / n, p[0].float(), atol=0.015), (q, counts / n)
        assert abs(kept_share / n - torch.minimum(p, q).sum().item()) < 0.015  # kept: the overlap of p and q


def test_sampling_with_drafts_follows_the_base_distribution(alphabet_base, drafter):
    """Sampled, the drafting loop's text has the AR loop's distribution: the frequencies of the second and third
    tokens (the first ones a draft may write) over many seeds agree."""
    base = blockgen.load(alphabet_base, device="cpu", dtype="float32", quantize=None)
    lm = blockgen.load(drafter, device="cpu", dtype="float32", quantize=None)
    options = {"max_new_tokens": 3, "temperature": 1.0, "top_k": 8}
    seen = {"ar": {}, "drafted": {}}
    kept = 0
    for seed in range(400):
        for name, model, extra in (("ar", base, {}), ("drafted", lm, {"draft_threshold": 0.0})):
            result = model.generate_results("mnop", seed=seed, **options, **extra)[0]
            for place in (1, 2):
                key = (place, result.tokens[place])
                seen[name][key] = seen[name].get(key, 0) + 1
            kept += result.stats.forward_passes < 3 if name == "drafted" else 0
    keys = set(seen["ar"]) | set(seen["drafted"])
    distance = sum(abs(seen["ar"].get(k, 0) - seen["drafted"].get(k, 0)) for k in keys) / 2 / 800
    assert len(keys) > 4 and distance < 0.08, (distance, seen)
    assert kept > 100  # drafts were kept along the way
