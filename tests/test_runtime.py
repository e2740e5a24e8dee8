"""The loaded model's text and context helpers that the upper layers use instead of reaching into its parts."""

import pytest
from helpers import diffusion_checkpoint, make_tokenizer

import blockgen
from blockgen.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("rt") / "bd"), device="cpu")


def test_encode_text_adds_no_special_tokens(tiny):
    text = " the river ran"
    assert tiny.encode_text(text) == make_tokenizer()(text, add_special_tokens=False)["input_ids"]
    assert tiny.encode_text("") == []
    assert tiny.decode(tiny.encode_text(text)) == text


def test_chat_template_presence(tiny, monkeypatch):
    assert tiny.has_chat_template is True
    monkeypatch.setattr(tiny.tokenizer, "chat_template", None)
    assert tiny.has_chat_template is False
    with pytest.raises(InvalidArgumentError, match="no chat template"):
        tiny.encode("hello", chat=True)


def test_context_limit_and_ntk_factor(tiny):
    assert tiny.context_limit == 256  # the tiny checkpoint's max_position_embeddings
    assert tiny.ntk_factor_for(tiny.context_limit) == 1.0
    assert tiny.ntk_factor_for(4096) == tiny.model.ntk_factor_for(4096) > 1.0
