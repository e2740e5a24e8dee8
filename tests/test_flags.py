"""CLI flags come from the options models: every field once, its type, choices and default from the model."""

import argparse

import pytest

from blockgen.adapt import AdaptConfig
from blockgen.cli import build_parser
from blockgen.document.writer import PER_PARAGRAPH, WriterConfig
from blockgen.engine import GenerationConfig
from blockgen.flags import add_flags, given


def _parse(model, argv, **kwargs):
    parser = argparse.ArgumentParser(exit_on_error=False)
    names = add_flags(parser, model, **kwargs)
    return given(parser.parse_args(argv), names), names


def test_every_generation_field_is_a_flag_and_builds_the_config():
    options, names = _parse(GenerationConfig, ["--block-size", "8", "--scheduler", "factor", "--ntk-factor", "auto",
                                               "--stop", "END", "--stop", "\n\n", "--top-p", "0.9", "--cache", "none"])
    assert names == list(GenerationConfig.model_fields)
    config = GenerationConfig.build(**options)
    assert (config.block_size, config.scheduler, config.ntk_factor, config.stop) == (8, "factor", "auto", ("END", "\n\n"))
    assert config.top_p == 0.9 and config.cache == "none"
    assert _parse(GenerationConfig, ["--ntk-factor", "2.5"])[0] == {"ntk_factor": 2.5}
    assert _parse(GenerationConfig, [])[0] == {}  # nothing given: the model's defaults apply
    # a tuple of constrained strings is repeatable too; the model checks the constraint
    options = _parse(GenerationConfig, ["--dry-multiplier", "0.8", "--dry-breakers", ":", "--dry-breakers", "!"])[0]
    assert GenerationConfig.build(**options).dry_breakers == (":", "!")


def test_literal_choices_and_bad_values_are_refused():
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        _parse(GenerationConfig, ["--scheduler", "telepathy"])
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        _parse(GenerationConfig, ["--ntk-factor", "lots"])


def test_lists_booleans_and_the_three_commands():
    options, _ = _parse(AdaptConfig, ["--block-sizes", "1,2,4", "--data", "a.txt", "--data", "b.jsonl",
                                      "--no-logit-shift"], exclude={"base"})
    assert options == {"block_sizes": [1, 2, 4], "data": ["a.txt", "b.jsonl"], "logit_shift": False}
    parser = build_parser()
    write = parser.parse_args(["write", "report", "tides", "--threshold", "0.8", "--candidates", "2"])
    assert set(write.option_names) == (set(WriterConfig.model_fields) - {"generation"}) | (
        set(GenerationConfig.model_fields) - set(PER_PARAGRAPH))
    config = WriterConfig.build(**given(write, write.option_names))
    assert config.candidates == 2 and config.generation.threshold == 0.8 and config.generation.temperature == 0.7
    generate = parser.parse_args(["generate", "hi", "--temperature", "0.5"])
    assert given(generate, generate.option_names) == {"temperature": 0.5}
    adapt = parser.parse_args(["adapt", "--out", "run", "--distill", "4", "--adapter-dtype", "bfloat16"])
    assert given(adapt, adapt.option_names) == {"distill": 4, "adapter_dtype": "bfloat16"}
