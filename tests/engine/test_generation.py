"""Variable length, stop conditions, batches, streaming and input validation of the generation tiers."""

import pytest
import torch

from blockgen.engine import DecodeSettings, FinishEvent, StepEvent, ThresholdScheduler, decode
from blockgen.errors import InvalidArgumentError


def _prompt(length, seed=0):
    return torch.randint(4, 267, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _finish(lm, prompts, stop_token_ids=(), **settings):
    settings = DecodeSettings(stop_token_ids=stop_token_ids, **{"block_size": 4, "steps": 4, **settings})
    events = list(decode(lm.model, lm.family, ThresholdScheduler(threshold=0.5), prompts, settings))
    return {e.row: (e.tokens, e.reason) for e in events if isinstance(e, FinishEvent)}


def test_eos_stops_once_everything_before_it_is_committed(block_lm):
    prompt = [_prompt(9, seed=11)]
    free, reason = _finish(block_lm, prompt, max_new_tokens=40)[0]
    assert reason == "length" and len(free) == 40
    eos = free[17]
    first = free.index(eos)
    stopped, reason = _finish(block_lm, prompt, stop_token_ids=(eos,), max_new_tokens=40)[0]
    assert reason == "stop" and stopped == free[:first]


def test_max_new_tokens_is_exact(block_lm):
    for n in (1, 3, 4, 13):
        tokens, reason = _finish(block_lm, [_prompt(6)], max_new_tokens=n)[0]
        assert len(tokens) == n and reason == "length"


@pytest.mark.parametrize("lm_name,cache", [("block_lm", "exact"), ("shifted_block_lm", "exact"),
                                           ("llada_lm", "none"), ("llada_lm", "dual")])
def test_batch_equals_single_prompts(request, lm_name, cache):
    lm = request.getfixturevalue(lm_name)
    prompts = [_prompt(5, 1), _prompt(11, 2), _prompt(8, 3), _prompt(2, 4)]
    block = 4 if lm_name != "llada_lm" else 8
    batch = _finish(lm, prompts, max_new_tokens=15, cache=cache, block_size=block, steps=block)
    singles = [_finish(lm, [p], max_new_tokens=15, cache=cache, block_size=block, steps=block)[0] for p in prompts]
    assert [batch[i] for i in range(4)] == singles


def test_rows_finish_on_their_own(block_lm):
    prompts = [_prompt(6, 5), _prompt(9, 6)]
    free = _finish(block_lm, prompts, max_new_tokens=30)
    eos = free[0][0][5]  # a token the first row produces early
    stopped = _finish(block_lm, prompts, stop_token_ids=(eos,), max_new_tokens=30)
    assert stopped[0] == (free[0][0][: free[0][0].index(eos)], "stop")
    second = free[1][0]
    assert stopped[1][0] == (second[: second.index(eos)] if eos in second else second)


def test_stream_yields_every_committed_token_once_in_order(block_lm):
    prompts = ["The river ran", "Once there was a thin line of"]
    seen = {0: [], 1: []}
    texts = {0: "", 1: ""}
    finals = {}
    for chunk in block_lm.stream(prompts, max_new_tokens=26, block_size=4, scheduler="threshold", threshold=0.5):
        seen[chunk.row].extend(chunk.tokens)
        texts[chunk.row] += chunk.text
        if chunk.finish_reason:
            finals[chunk.row] = chunk
    results = block_lm.generate_results(prompts, max_new_tokens=26, block_size=4, scheduler="threshold", threshold=0.5)
    for row in (0, 1):
        assert seen[row] == results[row].tokens
        assert texts[row] == results[row].text == block_lm.decode(results[row].tokens)
        assert finals[row].stats.forward_passes > 0
        assert finals[row].stats.tokens_per_forward > 1.0  # threshold decoding commits in parallel


def test_stop_strings_cut_text_and_stream(block_lm):
    free = block_lm.generate_results("The river ran", max_new_tokens=40, threshold=0.5)[0]
    assert free.finish_reason in ("length", "stop")
    text = free.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = block_lm.generate_results("The river ran", max_new_tokens=40, threshold=0.5, stop=[stop])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == text[: text.index(stop)]
    streamed = "".join(c.text for c in block_lm.stream("The river ran", max_new_tokens=40, threshold=0.5, stop=[stop]))
    assert streamed == cut.text


def test_events_tier_reports_steps_blocks_and_finish(block_lm):
    events = list(block_lm.events("The river", max_new_tokens=12, block_size=4, threshold=0.5))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert sum(e.committed for e in steps) == 12
    assert isinstance(events[-1], FinishEvent) and len(events[-1].tokens) == 12


def test_prompt_forms_string_messages_ids(block_lm):
    ids = block_lm.encode("The river ran")
    as_text = block_lm.generate("The river ran", max_new_tokens=8)
    assert block_lm.generate(ids, max_new_tokens=8) == as_text
    chat = block_lm.generate([{"role": "user", "content": "The river ran"}], max_new_tokens=8)
    assert chat == block_lm.generate("The river ran", chat=True, max_new_tokens=8)
    assert block_lm.generate(["The river ran", "The river ran"], max_new_tokens=8) == [as_text, as_text]


def test_seeded_sampling_is_reproducible(block_lm):
    kwargs = dict(max_new_tokens=16, temperature=1.0, top_k=50, top_p=0.95)
    a = block_lm.generate("The river ran", seed=3, **kwargs)
    assert a == block_lm.generate("The river ran", seed=3, **kwargs)
    assert a != block_lm.generate("The river ran", seed=4, **kwargs)


def test_context_overflow_is_an_error_or_ntk_when_asked(block_lm):
    long_prompt = _prompt(250, 9)  # the tiny model was trained on 256 positions
    with pytest.raises(InvalidArgumentError) as info:
        block_lm.generate(long_prompt, max_new_tokens=20)
    assert info.value.parameter == "max_new_tokens" and "ntk" in str(info.value).lower()
    text = block_lm.generate(long_prompt, max_new_tokens=20, ntk_factor="auto")
    assert isinstance(text, str)
    assert block_lm.model.ntk_factor == 1.0  # a call's factor is its own, never set on the model
    # 'auto' just past the trained length scales RoPE (the law alone asked for less than 1 there, and the guard was off)
    assert block_lm.ntk_factor_for(block_lm.context_limit + 1) > 1.0
    assert block_lm.ntk_factor_for(block_lm.context_limit) == 1.0


def test_streams_with_different_ntk_factors_interleave_without_leaking(block_lm):
    """The factor is per call: two streams advanced in turn each give what they give alone (it was model-global
    state set around a generator, so an interleaved or abandoned stream leaked it)."""
    from itertools import zip_longest

    prompt = _prompt(12, 31)
    options = dict(max_new_tokens=24, block_size=4)
    alone = {f: block_lm.generate(prompt, ntk_factor=f, **options) for f in (None, 8.0)}
    assert alone[None] != alone[8.0]  # the factor changes the text, so a leak would show
    streams = {f: block_lm.stream(prompt, ntk_factor=f, **options) for f in (None, 8.0)}
    texts = {f: "" for f in streams}
    for pieces in zip_longest(*streams.values()):
        for f, piece in zip(streams, pieces):
            texts[f] += piece.text if piece is not None else ""
    assert texts == alone
    abandoned = block_lm.stream(prompt, ntk_factor=8.0, **options)
    next(abandoned)
    assert block_lm.generate(prompt, **options) == alone[None]


def test_trained_length_is_a_family_field(tmp_path):
    """A checkpoint whose max_position_embeddings says more than it was trained at records its trained length
    (config 'blockgen.trained_length'); the guard and 'auto' NTK key on it."""
    import json

    from helpers import diffusion_checkpoint

    import blockgen
    from blockgen.errors import ConfigError

    path = diffusion_checkpoint(tmp_path / "ckpt", max_position_embeddings=1024)
    raw = json.loads((path / "config.json").read_text())
    raw["blockgen"] = {**raw.get("blockgen", {}), "trained_length": 64}
    (path / "config.json").write_text(json.dumps(raw))
    lm = blockgen.load(path)
    assert lm.context_limit == 64 and lm.family.trained_length == 64
    with pytest.raises(InvalidArgumentError, match="trained context 64"):
        lm.generate(_prompt(50, 3), max_new_tokens=16, block_size=4)
    assert lm.ntk_factor_for(100) > 1.0
    assert isinstance(lm.generate(_prompt(50, 3), max_new_tokens=16, block_size=4, ntk_factor="auto"), str)
    raw["blockgen"]["trained_length"] = "long"
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="trained_length"):
        blockgen.load(path)


@pytest.mark.parametrize(
    "call,parameter",
    [
        (lambda lm: lm.generate("", max_new_tokens=4), "prompt"),
        (lambda lm: lm.generate([], max_new_tokens=4), "prompt"),
        (lambda lm: lm.generate("x", max_new_tokens=0), "max_new_tokens"),
        (lambda lm: lm.generate("x", temperature=-1.0), "temperature"),
        (lambda lm: lm.generate("x", top_p=0.0), "top_p"),
        (lambda lm: lm.generate("x", scheduler="telepathy"), "scheduler"),
        (lambda lm: lm.generate("x", cache="sometimes"), "cache"),
        (lambda lm: lm.generate("x", max_tokens=5), "max_tokens"),
        (lambda lm: lm.generate([10**6]), "prompt"),
        (lambda lm: list(decode(lm.model, lm.family, ThresholdScheduler(), [[]], DecodeSettings(4, 4, 4))),
         "prompts[0]"),
    ],
)
def test_bad_generation_input_is_named(block_lm, call, parameter):
    with pytest.raises(InvalidArgumentError) as info:
        call(block_lm)
    assert info.value.parameter == parameter


def test_ar_checkpoint_without_mask_token_cannot_run_blocks(tmp_path):
    from helpers import save_checkpoint, tiny_hf_model

    import blockgen

    lm = blockgen.load(save_checkpoint(tiny_hf_model("llama"), tmp_path / "ar"))
    assert lm.family.mask_token_id is None
    assert len(lm.generate_results("The river", max_new_tokens=6)[0].tokens) <= 6  # block 1: AR mode
    with pytest.raises(InvalidArgumentError, match="mask token") as info:
        lm.generate("The river", max_new_tokens=6, block_size=4)
    assert info.value.parameter == "block_size"
    # prefix / dual caching refresh over a masked block: refused up front (they once embedded id -1: IndexError on
    # CPU, a device-side assert on CUDA)
    for mode in ("prefix", "dual"):
        with pytest.raises(InvalidArgumentError, match="no mask token") as info:
            lm.generate("The river", max_new_tokens=6, cache=mode)
        assert info.value.parameter == "cache" and info.value.value == mode


def test_batch_with_editing_and_early_stops_equals_single_prompts(block_lm):
    prompts = [_prompt(6, 21), _prompt(10, 22), _prompt(3, 23)]

    def run(batch, stop_ids=()):
        settings = DecodeSettings(max_new_tokens=30, block_size=4, steps=4, stop_token_ids=stop_ids)
        scheduler = ThresholdScheduler(threshold=0.6, editing_threshold=0.5)
        events = decode(block_lm.model, block_lm.family, scheduler, batch, settings)
        return {e.row: (e.tokens, e.reason) for e in events if isinstance(e, FinishEvent)}

    free = run(prompts)
    eos = free[0][0][9]
    batched = run(prompts, (eos,))
    singles = [run([p], (eos,))[0] for p in prompts]
    assert [batched[i] for i in range(3)] == singles
    assert batched[0][1] == "stop"


def test_stop_tokens_come_from_generation_config_and_end_of_turn_tokens(tmp_path):
    """A checkpoint's generation_config.json EOS and its chat end-of-turn token end a generation, not only
    config.json's eos_token_id (text ran on past '<|im_end|>' invisibly)."""
    import json

    from helpers import save_checkpoint, tiny_hf_model

    import blockgen

    path = save_checkpoint(tiny_hf_model("llama"), tmp_path / "ar")
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 77]}))
    lm = blockgen.load(path)
    end_of_turn = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert lm.stop_token_ids[0] == 0 and {77, end_of_turn} <= set(lm.stop_token_ids)
    free = list(lm.generate_results("The river", max_new_tokens=12)[0].tokens)
    stop = free[3]  # a token the model writes, made a stop through generation_config only
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, stop]}))
    again = blockgen.load(path).generate_results("The river", max_new_tokens=12)[0]
    assert list(again.tokens) == free[: free.index(stop)] and again.finish_reason == "stop"
    (path / "generation_config.json").write_text("{not json")
    from blockgen.errors import ConfigError

    with pytest.raises(ConfigError, match="eos_token_id"):
        blockgen.load(path)
