"""Shared by the adaptation tests: a tiny base checkpoint, alphabet data, and a tiny model adapted on it."""

import random

import pytest


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from helpers import save_checkpoint, tiny_hf_model

    return save_checkpoint(tiny_hf_model(), tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def alphabet(tmp_path_factory):
    """Lines of the alphabet from a random letter on: after a block of context, every later letter is certain."""
    rng, letters = random.Random(0), "abcdefghijklmnopqrstuvwxyz"
    lines = ["".join(letters[(start + i) % 26] for i in range(40)) for start in (rng.randrange(26) for _ in range(300))]
    path = tmp_path_factory.mktemp("data") / "alphabet.txt"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def learned(base, alphabet, tmp_path_factory):
    """The tiny base adapted to blocks of 4 on the alphabet (60 steps, fully fine-tuned): mostly right, not sure yet."""
    from blockgen.adapt import AdaptConfig, adapt

    out = tmp_path_factory.mktemp("learned") / "run"
    adapt(AdaptConfig.build(base=str(base), data=[str(alphabet)], steps=60, batch_size=8, seq_len=48, lr=3e-3,
                            lora_rank=None, block_sizes=[4], checkpoint_every=1000, device="cpu", warmup_steps=5), out)
    return out
