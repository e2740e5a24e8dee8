"""Infill of a fixed skeleton: slot by slot for causal / block-causal models, one joint canvas for bidirectional."""

import pytest

from blockgen.engine import Slot, infill
from blockgen.errors import InvalidArgumentError

SKELETON = ["Title: ", Slot("title", 6), "\nA: ", Slot("a", 5), "\nB: ", Slot("b", 5), "\n"]


def test_block_causal_slots_continue_the_text_before_them(block_lm):
    prefix = block_lm.encode("Plan:")
    filled = infill(block_lm, SKELETON, prefix=prefix, block_size=4, threshold=0.5)
    assert set(filled) == {"title", "a", "b"} and all("\n" not in t for t in filled.values())
    # each slot is exactly the engine's continuation of everything before it, cut at the line end
    text = ""
    for part in SKELETON:
        if isinstance(part, str):
            text += part
            continue
        ids = prefix + block_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        expected = block_lm.generate_results(ids, max_new_tokens=part.tokens, stop=("\n",), seed=0, block_size=4,
                                             threshold=0.5)[0].text.split("\n")[0]
        assert filled[part.name] == expected
        text += filled[part.name]
    # text to the right of a slot cannot matter to a causal model
    changed = infill(block_lm, SKELETON[:-1] + ["\nC: something else entirely\n"], prefix=prefix, block_size=4,
                     threshold=0.5)
    assert changed == filled


def test_bidirectional_canvas_sees_both_sides(llada_lm):
    prefix = llada_lm.encode("Plan:")
    first = infill(llada_lm, SKELETON, prefix=prefix, threshold=0.5)
    assert set(first) == {"title", "a", "b"}
    assert infill(llada_lm, SKELETON, prefix=prefix, threshold=0.5) == first  # deterministic
    right = ["Title: ", Slot("title", 6), "\nA: the harbour, the tide tables and the moon\n"]
    other = ["Title: ", Slot("title", 6), "\nA: zebra quartz vortex\n"]
    # fixed text after the slot changes what fills it: the joint canvas is attended both ways
    assert infill(llada_lm, right, prefix=prefix) != infill(llada_lm, other, prefix=prefix)
    sampled = {infill(llada_lm, SKELETON, prefix=prefix, temperature=1.0, seed=s)["title"] for s in range(3)}
    assert len(sampled) > 1


def test_bad_skeletons(block_lm):
    with pytest.raises(InvalidArgumentError, match="tokens"):
        Slot("x", 0)
    with pytest.raises(InvalidArgumentError, match="unique"):
        infill(block_lm, ["a", Slot("x", 2), "b", Slot("x", 2)])
    with pytest.raises(InvalidArgumentError, match="parts"):
        infill(block_lm, [])
    with pytest.raises(InvalidArgumentError, match="string or a Slot"):
        infill(block_lm, ["a", 3])
    with pytest.raises(InvalidArgumentError, match="prefix or text"):
        infill(block_lm, [Slot("x", 2)])
    assert infill(block_lm, ["only fixed text"]) == {}


def test_fill_writes_every_mask_of_a_canvas_and_nothing_else(llada_lm, block_lm):
    from blockgen.engine import DecodeSettings, ThresholdScheduler, fill

    mask = llada_lm.family.mask_token_id
    fixed = llada_lm.encode_text("Title: the tides\nA: ")
    canvas = fixed[:3] + [mask] * 4 + fixed[3:] + [mask] * 5
    settings = DecodeSettings(9, len(canvas), 9, cache="none")
    out = fill(llada_lm.model, llada_lm.family, ThresholdScheduler(threshold=0.5), canvas, settings)
    assert len(out) == len(canvas) and mask not in out
    assert [t for t, c in zip(out, canvas) if c != mask] == [c for c in canvas if c != mask]  # fixed text untouched
    assert fill(llada_lm.model, llada_lm.family, ThresholdScheduler(threshold=0.5), canvas, settings) == out
    with pytest.raises(InvalidArgumentError) as info:  # a canvas is decoded in full every pass
        fill(llada_lm.model, llada_lm.family, ThresholdScheduler(), canvas, DecodeSettings(9, len(canvas), 9))
    assert info.value.parameter == "cache"
    with pytest.raises(InvalidArgumentError, match="bidirectional"):  # causal models cannot see to their right
        fill(block_lm.model, block_lm.family, ThresholdScheduler(), canvas, settings)
