"""Family records from config.json: attention kind, logit shift, mask token id and block size."""

import pytest
from helpers import make_tokenizer

from blockgen.errors import ConfigError
from blockgen.models import AttentionKind, family_from_config


def _tokenizer(mask_string=None, as_mask_token=False):
    tok = make_tokenizer()
    if as_mask_token:
        tok.add_special_tokens({"mask_token": mask_string})
    elif mask_string:
        tok.add_special_tokens({"additional_special_tokens": [mask_string]})
    return tok


@pytest.mark.parametrize(
    "raw,tokenizer,expected",
    [
        ({"model_type": "llama"}, None, (AttentionKind.CAUSAL, True, None, 1)),
        ({"model_type": "Dream", "mask_token_id": 151666}, None, (AttentionKind.BIDIRECTIONAL, True, 151666, 32)),
        ({"model_type": "Fast_dLLM_QWen", "bd_size": 32}, _tokenizer("|<MASK>|"),
         (AttentionKind.BLOCK_CAUSAL, True, "|<MASK>|", 32)),
        ({"model_type": "sdar", "block_size": 8}, _tokenizer("<|MASK|>"), (AttentionKind.BLOCK_CAUSAL, False, "<|MASK|>", 8)),
        ({"model_type": "llada", "mask_token_id": 126336}, None, (AttentionKind.BIDIRECTIONAL, False, 126336, 32)),
        ({"model_type": "qwen3"}, _tokenizer("<mask>", as_mask_token=True), (AttentionKind.CAUSAL, True, "<mask>", 1)),
        ({"model_type": "sdar"}, _tokenizer("<|MASK|>"), (AttentionKind.BLOCK_CAUSAL, False, "<|MASK|>", 4)),
    ],
    ids=["llama", "dream", "fast-dllm-v2", "sdar", "llada", "qwen3-tokenizer-mask", "sdar-default-block"],
)
def test_family_records(raw, tokenizer, expected):
    if isinstance(expected[2], str):  # a mask token string: its id comes from the tokenizer
        expected = (*expected[:2], tokenizer.convert_tokens_to_ids(expected[2]), expected[3])
        assert expected[2] == len(make_tokenizer())  # the token was added to the vocabulary
    family = family_from_config(raw, tokenizer)
    assert (family.attention, family.logit_shift, family.mask_token_id, family.block_size) == expected
    assert family.exact_cache == (family.attention is not AttentionKind.BIDIRECTIONAL)


def test_trained_length_comes_from_the_family_or_the_override():
    dream = family_from_config({"model_type": "Dream", "mask_token_id": 151666, "max_position_embeddings": 131072})
    assert dream.trained_length == 2048  # not the 131072 positions its config allows
    assert family_from_config({"model_type": "llama"}).trained_length is None  # max_position_embeddings then
    raw = {"model_type": "llama", "blockgen": {"trained_length": 4096}}
    assert family_from_config(raw).trained_length == 4096
    with pytest.raises(ConfigError, match="trained_length"):
        family_from_config({"model_type": "llama", "blockgen": {"trained_length": 0}})


def test_blockgen_override_makes_an_adapted_checkpoint():
    raw = {"model_type": "llama", "blockgen": {"attention": "block_causal", "block_size": 8, "mask_token_id": 5}}
    family = family_from_config(raw)
    assert family.attention is AttentionKind.BLOCK_CAUSAL and family.block_size == 8 and family.logit_shift
    assert family.attention_for().block_size == 8 and family.attention_for(2).block_size == 2


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"model_type": "gpt2"}, "model_type"),
        ({"model_type": "sdar"}, "mask_token_id"),
        ({"model_type": "llama", "blockgen": {"attention": "sideways"}}, "blockgen.attention"),
        ({"model_type": "llama", "blockgen": {"block_size": 0}}, "block_size"),
        ({"model_type": "llama", "blockgen": []}, "blockgen"),
    ],
)
def test_bad_family_fields_are_named(raw, field):
    with pytest.raises(ConfigError) as info:
        family_from_config(raw, None, "ckpt/config.json")
    assert info.value.field == field and "ckpt/config.json" in str(info.value)
