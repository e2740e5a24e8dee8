"""`adapt` end to end on tiny real models: the trained model decodes several tokens per forward, a resumed run
continues the same run, runs refuse to clobber or silently diverge, and self-distillation goes through the engine."""

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

import blockgen
from blockgen.adapt import AdaptConfig, adapt
from blockgen.adapt.trainer import pick_mask_token
from blockgen.errors import InvalidArgumentError


def test_trained_tiny_model_commits_several_tokens_per_forward(base, alphabet, tmp_path):
    config = AdaptConfig.build(base=str(base), data=[str(alphabet)], steps=240, batch_size=8, seq_len=48, lr=3e-3,
                               lora_rank=None, block_sizes=[1, 2, 4], checkpoint_every=1000, device="cpu",
                               warmup_steps=10)
    seen = []
    result = adapt(config, tmp_path / "run", on_progress=seen.append)
    assert result.finished and result.step == 240 and result.tokens_seen > 0
    losses = [p.loss for p in seen]
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20  # the loss falls
    assert [p.block_size for p in seen][0:120:40] == [1, 2, 4]  # the curriculum: 30% of the steps warm up
    lm = blockgen.load(tmp_path / "run", device="cpu")
    assert lm.family.attention.value == "block_causal" and lm.family.block_size == 4
    record = json.loads((tmp_path / "run" / "config.json").read_text())["blockgen_training"]
    assert record["steps"] == 240 and record["tokens_seen"] == result.tokens_seen
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert f"tokens seen: {result.tokens_seen:,}" in card and "full fine-tuning" in card and "alphabet.txt" in card
    per_forward = []
    for prompt in ("klmnopqrst", "defghijklm", "uvwxyzabcd"):
        out = lm.generate_results(prompt, max_new_tokens=16, block_size=4, threshold=0.9)[0]
        per_forward.append(out.stats.tokens_per_forward)
    assert sum(per_forward) / len(per_forward) > 1.3, per_forward
    # the untrained base, decoded the same way, commits one token per forward
    ar = blockgen.load(base, device="cpu").generate_results("klmnopqrst", max_new_tokens=16)[0]
    assert ar.stats.tokens_per_forward == 1.0


def _lora_config(base, alphabet, **overrides):
    options = dict(base=str(base), data=[str(alphabet)], steps=6, batch_size=4, seq_len=32, lr=1e-2, lora_rank=4,
                   block_sizes=[1, 4], checkpoint_every=2, device="cpu", warmup_steps=2, mask_noise_fraction=1.0)
    return AdaptConfig.build(**(options | overrides))


def test_resume_continues_the_same_run(base, alphabet, tmp_path):
    straight = adapt(_lora_config(base, alphabet), tmp_path / "straight")
    first = adapt(_lora_config(base, alphabet), tmp_path / "split", stop_after=3)
    assert not first.finished and first.step == 3
    lm = blockgen.load(tmp_path / "split", device="cpu")  # loadable after any checkpoint
    assert lm.family.attention.value == "block_causal"
    second = adapt(_lora_config(base, alphabet), tmp_path / "split", resume=True)
    assert second.finished and second.step == 6 and second.tokens_seen == straight.tokens_seen
    a = load_file(tmp_path / "straight" / "training" / "checkpoint" / "trainable.safetensors")
    b = load_file(tmp_path / "split" / "training" / "checkpoint" / "trainable.safetensors")
    assert a.keys() == b.keys() and any("lora_A" in k for k in a) and "mask_embedding" in a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    states = [json.loads((tmp_path / d / "training" / "checkpoint" / "state.json").read_text())
              for d in ("straight", "split")]
    assert states[0]["losses"] == pytest.approx(states[1]["losses"], abs=1e-4)
    config = json.loads((tmp_path / "split" / "adapter_config.json").read_text())
    assert config["training"]["steps"] == 6 and config["lora_rank"] == 4


def test_a_run_trains_on_from_an_earlier_adapter(base, alphabet, tmp_path):
    first = adapt(_lora_config(base, alphabet, steps=4), tmp_path / "first")
    earlier = load_file(tmp_path / "first" / "training" / "checkpoint" / "trainable.safetensors")
    # the smallest lr: the new run's weights start where the earlier adapter ended, not from LoRA's init
    adapt(_lora_config(base, alphabet, steps=1, lr=1e-12, init_from=str(tmp_path / "first"), block_sizes=[4],
                       mask_noise=0.0), tmp_path / "second")
    now = load_file(tmp_path / "second" / "training" / "checkpoint" / "trainable.safetensors")
    assert now.keys() == earlier.keys()
    for name in now:  # the adapter travels in float32 here, so the start is exact up to the tiny step
        torch.testing.assert_close(now[name], earlier[name], atol=1e-6, rtol=1e-5)
    config = json.loads((tmp_path / "second" / "adapter_config.json").read_text())
    assert config["training"]["started_from"][0]["steps"] == 4
    assert config["training"]["started_from"][0]["tokens_seen"] == first.tokens_seen
    assert "started from an earlier adapter" in (tmp_path / "second" / "MODEL_CARD.md").read_text()
    with pytest.raises(InvalidArgumentError, match="init_from.*lora_rank 4, this run 8"):
        adapt(_lora_config(base, alphabet, steps=1, lora_rank=8, init_from=str(tmp_path / "first")), tmp_path / "x")
    with pytest.raises(InvalidArgumentError, match="init_from.*not an adapter directory"):
        adapt(_lora_config(base, alphabet, steps=1, init_from=str(tmp_path / "nothing")), tmp_path / "y")


def test_a_replanned_run_trains_as_one_planned_with_its_final_total(base, alphabet, tmp_path):
    planned = adapt(_lora_config(base, alphabet, steps=10, block_sizes=[4], mask_noise=0.0), tmp_path / "planned")
    asked = []

    def replan(done, steps):  # e.g. a deadline measured from step times: here, grow 6 -> 10 after step 2
        asked.append((done, steps))
        return 10 if done >= 2 else steps

    resized = adapt(_lora_config(base, alphabet, steps=6, block_sizes=[4], mask_noise=0.0), tmp_path / "resized",
                    replan=replan)
    assert planned.finished and resized.finished and resized.step == 10 and resized.steps == 10
    assert asked[:3] == [(1, 6), (2, 6), (3, 10)] and max(done for done, _ in asked) < 9  # not asked in the decay
    a, b = (json.loads((tmp_path / d / "training" / "checkpoint" / "state.json").read_text())["losses"]
            for d in ("planned", "resized"))
    assert a == pytest.approx(b, abs=1e-5)
    record = json.loads((tmp_path / "resized" / "adapter_config.json").read_text())["training"]
    assert record["steps"] == record["steps_planned"] == 10


def test_a_bfloat16_base_trains_float32_lora_weights(base, alphabet, tmp_path):
    run = adapt(_lora_config(base, alphabet, steps=3, base_dtype="bfloat16"), tmp_path / "run")
    assert run.finished and math.isfinite(run.loss)
    trained = load_file(tmp_path / "run" / "training" / "checkpoint" / "trainable.safetensors")
    assert all(t.dtype == torch.float32 for t in trained.values()) and any("lora_B" in k for k in trained)
    assert any(float(t.abs().max()) > 0 for k, t in trained.items() if "lora_B" in k)  # LoRA B left zero: untrained
    with pytest.raises(InvalidArgumentError, match="base_dtype"):
        adapt(_lora_config(base, alphabet, lora_rank=None, base_dtype="bfloat16"), tmp_path / "full")


def test_runs_refuse_to_clobber_or_drift(base, alphabet, tmp_path):
    adapt(_lora_config(base, alphabet, steps=2), tmp_path / "run")
    with pytest.raises(InvalidArgumentError, match="resume"):
        adapt(_lora_config(base, alphabet, steps=2), tmp_path / "run")
    with pytest.raises(InvalidArgumentError, match="lr=0.001"):
        adapt(_lora_config(base, alphabet, steps=4, lr=1e-3), tmp_path / "run", resume=True)
    more = adapt(_lora_config(base, alphabet, steps=4), tmp_path / "run", resume=True)  # only steps may grow
    assert more.step == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="out="):
        adapt(_lora_config(base, alphabet), tmp_path / "other")


def test_bad_settings_name_the_parameter(base, alphabet, tmp_path):
    with pytest.raises(InvalidArgumentError, match="block_sizes"):
        AdaptConfig.build(base=str(base), distill=4, block_sizes=[4, 2])
    with pytest.raises(InvalidArgumentError, match="data="):
        AdaptConfig.build(base=str(base))
    with pytest.raises(InvalidArgumentError, match="steps"):
        AdaptConfig.build(base=str(base), distill=4, steps=0)
    with pytest.raises(InvalidArgumentError, match="no such file"):
        adapt(AdaptConfig.build(base=str(base), data=[str(tmp_path / "nope.txt")], device="cpu"), tmp_path / "a")
    with pytest.raises(InvalidArgumentError, match="mask_token"):
        adapt(_lora_config(base, alphabet, mask_token="<|nope|>"), tmp_path / "b")
    from helpers import diffusion_checkpoint

    diffusion = diffusion_checkpoint(tmp_path / "diffusion")
    with pytest.raises(InvalidArgumentError, match="causal LM"):
        adapt(_lora_config(diffusion, alphabet), tmp_path / "c")


def test_mask_token_choice(tokenizer):
    assert pick_mask_token(tokenizer, None) == ("<|mask|>", tokenizer.convert_tokens_to_ids("<|mask|>"))
    assert pick_mask_token(tokenizer, "<|im_end|>")[0] == "<|im_end|>"


def test_self_distillation_writes_the_dataset(base, tmp_path):
    config = AdaptConfig.build(base=str(base), distill=3, distill_tokens=12, distill_batch=2, steps=2, batch_size=2,
                               seq_len=64, lora_rank=4, block_sizes=[2], device="cpu", distill_temperature=0.7)
    phases = []
    adapt(config, tmp_path / "run", on_progress=lambda p: phases.append((p.phase, p.done, p.total)))
    assert ("distill", 2, 3) in phases and ("distill", 3, 3) in phases
    lines = [json.loads(line) for line in (tmp_path / "run" / "training" / "data.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    from helpers import make_tokenizer

    tok = make_tokenizer()
    assert all(tok.decode(line["prompt"]).startswith("<|im_start|>user\n") for line in lines)
    assert all(8 <= len(line["completion"]) <= 13 for line in lines)


def test_distillation_through_transformers_gives_the_engines_answers(base):
    """The faster sampling path for a GPU lease: transformers' generate on the same weights gives, greedy, the same
    answers as blockgen's decode loop (left-padded rows of different lengths included)."""
    from blockgen.adapt.data import distill

    lm = blockgen.load(base, device="cpu", dtype="float32")
    prompts = ["Tell me about the sea.", "A short poem about bread and the morning oven, please.", "Why?"]
    ours = distill(lm, prompts, max_new_tokens=12, batch_size=2, temperature=0.0)
    theirs = distill(lm, prompts, max_new_tokens=12, batch_size=2, temperature=0.0, engine="transformers")
    assert len(ours) == 3 and theirs == ours
    sampled = distill(lm, prompts, max_new_tokens=12, batch_size=3, temperature=0.7, engine="transformers")
    assert len(sampled) == 3 and all(e.prompt == o.prompt and len(e.completion) >= 8 for e, o in zip(sampled, ours))
    with pytest.raises(InvalidArgumentError, match="engine"):
        distill(lm, prompts, engine="vllm")


def test_mask_embedding_is_trained_and_noised_per_position(base):
    from blockgen.adapt.layout import build_batch
    from blockgen.adapt.trainer import Trainee

    lm = blockgen.load(base, device="cpu", pack=False)  # trained: plain layers
    mask_id = lm.tokenizer.convert_tokens_to_ids("<|mask|>")
    trainee = Trainee(lm.model, mask_id)
    ids = torch.randint(10, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    ones = torch.ones_like(ids, dtype=torch.bool)
    batch = build_batch(ids, ones, ones, block_size=4, mask_token_id=mask_id, logit_shift=True,
                        generator=torch.Generator().manual_seed(1))
    count = int((batch.input_ids == mask_id).sum())
    plain = trainee(batch)
    torch.testing.assert_close(trainee(batch, torch.zeros(count, lm.config.hidden_size)), plain)
    noisy = trainee(batch, torch.randn(count, lm.config.hidden_size, generator=torch.Generator().manual_seed(2)))
    assert not torch.allclose(noisy, plain)
    plain.backward()
    assert trainee.mask_embedding.grad is not None and trainee.mask_embedding.grad.abs().sum() > 0


def test_certainty_adds_the_entropy_of_the_right_predictions(base):
    from blockgen.adapt.layout import build_batch
    from blockgen.adapt.trainer import Trainee

    lm = blockgen.load(base, device="cpu", pack=False)  # trained: plain layers
    mask_id = lm.tokenizer.convert_tokens_to_ids("<|mask|>")
    ids = torch.randint(10, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    ones = torch.ones_like(ids, dtype=torch.bool)
    batch = build_batch(ids, ones, ones, block_size=4, mask_token_id=mask_id, logit_shift=True,
                        generator=torch.Generator().manual_seed(1))
    plain = Trainee(lm.model, mask_id)
    ce = plain(batch)
    torch.testing.assert_close(plain.cross_entropy, ce.detach())
    # make some predictions right: the targets become the model's own argmax at half the positions
    with torch.no_grad():
        hidden = lm.model.hidden_states(batch.input_ids, positions=batch.positions, attn_mask=batch.attn_mask,
                                        inputs_embeds=torch.where((batch.input_ids == mask_id)[..., None],
                                                                  plain.mask_embedding,
                                                                  lm.model.model.embed_tokens(batch.input_ids)))
        logits = lm.model.logits(hidden[batch.target_rows, batch.target_cols]).float()
    batch.targets = torch.where(torch.arange(batch.tokens) % 2 == 0, logits.argmax(-1), batch.targets)
    right = logits.argmax(-1) == batch.targets
    probs = logits[right].softmax(-1)
    entropy = -(probs * probs.log()).sum() / batch.tokens
    forced = Trainee(lm.model, mask_id, certainty=0.5)
    ce = torch.nn.functional.cross_entropy(logits, batch.targets)
    total = forced(batch)
    torch.testing.assert_close(forced.cross_entropy, ce, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(total, ce + 0.5 * entropy, rtol=1e-4, atol=1e-4)


def test_a_run_with_certainty_and_suffix_blocks_logs_the_cross_entropy(base, alphabet, tmp_path):
    runs = {}
    for name, weight in (("plain", 0.0), ("certain", 1.0)):
        seen = []
        adapt(_lora_config(base, alphabet, certainty=weight, suffix_share=0.5, block_sizes=[4]), tmp_path / name,
              on_progress=seen.append)
        runs[name] = [p.loss for p in seen]
    # the same weights and batch at step 0: the logged loss is the cross-entropy alone, without the entropy term
    assert runs["plain"][0] == pytest.approx(runs["certain"][0], rel=1e-5)
    settings = json.loads((tmp_path / "certain" / "training" / "run.json").read_text())
    assert settings["certainty"] == 1.0 and settings["suffix_share"] == 0.5
    assert blockgen.load(tmp_path / "certain", device="cpu").family.block_size == 4


def test_certainty_forcing_sharpens_the_right_predictions(learned):
    """From a model that has learned the alphabet, the same steps with certainty forcing leave the predictions that
    are right more confident, and as many of them right."""
    from blockgen.adapt.layout import build_batch
    from blockgen.adapt.trainer import Trainee

    letters = "abcdefghijklmnopqrstuvwxyz"

    def batch_of(lm, starts, seed):
        text = ["".join(letters[(s + i) % 26] for i in range(30)) for s in starts]
        ids = torch.tensor([lm.tokenizer(t, add_special_tokens=False)["input_ids"][:24] for t in text])
        ones = torch.ones_like(ids, dtype=torch.bool)
        return build_batch(ids, ones, ones, block_size=4, mask_token_id=lm.family.mask_token_id, logit_shift=True,
                           generator=torch.Generator().manual_seed(seed))

    found = {}
    for weight in (0.0, 1.0):
        lm = blockgen.load(learned, device="cpu", dtype="float32", quantize=None, pack=False)
        lm.model.requires_grad_(True)
        trainee = Trainee(lm.model, lm.family.mask_token_id, certainty=weight)
        optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-3)
        for step in range(15):
            loss = trainee(batch_of(lm, [random.Random(step * 8 + k).randrange(26) for k in range(8)], step))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        held_out = batch_of(lm, (3, 11, 19, 24), 999)
        with torch.no_grad():
            hidden = lm.model.hidden_states(held_out.input_ids, positions=held_out.positions,
                                            attn_mask=held_out.attn_mask)
            top, picked = lm.model.logits(hidden[held_out.target_rows, held_out.target_cols]).float() \
                .softmax(-1).max(-1)
        right = picked == held_out.targets
        found[weight] = float(right.float().mean()), float(top[right].mean())
    (plain_right, plain_confidence), (forced_right, forced_confidence) = found[0.0], found[1.0]
    assert plain_right > 0.9 and forced_right >= plain_right - 0.02, found
    assert forced_confidence > plain_confidence + 0.005, found


def test_a_looping_answer_is_cut_where_the_loop_starts():
    from blockgen.adapt.data import cut_loop

    text = list(range(20))
    assert cut_loop(text) == 20  # no 8-gram repeats
    looping = [1, 2, 3] + [7, 8, 9, 10] * 5
    assert cut_loop(looping) == 7 and looping[:7] == [1, 2, 3, 7, 8, 9, 10]  # one copy kept
    assert cut_loop([5] * 12) == 1 and cut_loop([5] * 7) == 7


def test_packing_fills_rows_and_a_step_is_a_pure_function_of_the_step():
    from blockgen.adapt.data import Example, pack
    from blockgen.adapt.trainer import _PackedRows

    rng = random.Random(1)
    examples = [Example(tuple(range(rng.randrange(0, 6))), tuple(range(rng.randrange(1, 30)))) for _ in range(200)]
    rows = pack(examples, list(range(200)), 64, 8)
    assert sorted(i for row in rows for i in row) == list(range(200))
    spans = [sum(-(-(len(examples[i].prompt) + len(examples[i].completion)) // 8) * 8 for i in row) for row in rows]
    assert max(spans) <= 64 and sum(spans) / (64 * len(rows)) > 0.9  # rows are nearly full
    packed = _PackedRows(examples, 64, 8, seed=3)
    first = packed.for_step(7, 16)
    assert len(first) == 16 and first == _PackedRows(examples, 64, 8, seed=3).for_step(7, 16)
    # steps walk through epochs: every example comes once per epoch
    per_epoch = len(packed._epoch(0))
    seen = [ex for step in range(per_epoch // 4) for row in packed.for_step(step, 4) for ex in row]
    assert len(seen) == sum(len(r) for r in packed._epoch(0)[: per_epoch // 4 * 4])


def test_packed_run_trains_on_full_rows(base, tmp_path):
    rng, letters = random.Random(2), "abcdefghijklmnopqrstuvwxyz"
    from blockgen.adapt.data import Example, save_examples

    lm = blockgen.load(base, device="cpu")
    short = []
    for _ in range(200):
        start = rng.randrange(26)
        text = "".join(letters[(start + i) % 26] for i in range(rng.randrange(8, 20)))
        short.append(Example((), tuple(lm.tokenizer(text, add_special_tokens=False)["input_ids"])))
    data = tmp_path / "short.jsonl"
    save_examples(short, data)
    common = dict(base=str(base), data=[str(data)], steps=60, batch_size=4, seq_len=64, lr=3e-3, lora_rank=None,
                  block_sizes=[2, 4], checkpoint_every=1000, device="cpu", warmup_steps=5)
    packed, plain = [], []
    adapt(AdaptConfig.build(pack=True, **common), tmp_path / "packed", on_progress=packed.append)
    result = adapt(AdaptConfig.build(**common), tmp_path / "plain", on_progress=plain.append)
    losses = [p.loss for p in packed]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10  # the loss falls
    tokens = json.loads((tmp_path / "packed" / "config.json").read_text())["blockgen_training"]["tokens_seen"]
    assert tokens > 2.5 * result.tokens_seen  # rows hold several examples each
    with pytest.raises(InvalidArgumentError, match="seq_len"):
        AdaptConfig.build(pack=True, **{**common, "seq_len": 62})
