"""The `blockgen` command: generate and info, on a tiny checkpoint and on the embedded default."""

import subprocess
import sys

import pytest
from helpers import save_checkpoint, tiny_hf_model

import blockgen
from blockgen.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_hf_model("qwen2"), tmp_path_factory.mktemp("cli") / "ckpt")


def test_generate_on_a_checkpoint_directory(ckpt, capsys):
    assert main(["generate", "The river", "--model", str(ckpt), "--max-new-tokens", "5", "--raw"]) == 0
    out, err = capsys.readouterr()
    expected = blockgen.load(ckpt).generate("The river", max_new_tokens=5)
    assert out == expected + "\n"
    assert "tokens/forward" in err and "loaded in" in err and "finish: " in err


def test_generate_with_block_diffusion_options(tmp_path, capsys):
    from helpers import diffusion_checkpoint

    path = diffusion_checkpoint(tmp_path / "bd")
    argv = ["generate", "The river", "--model", str(path), "--raw", "--max-new-tokens", "24", "--block-size", "8",
            "--scheduler", "threshold", "--threshold", "0.5", "--cache", "exact", "--seed", "1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    expected = blockgen.load(path).generate("The river", max_new_tokens=24, block_size=8, threshold=0.5, seed=1)
    assert out == expected + "\n"
    per_forward = float(err.split(" tokens/forward")[0].rsplit("(", 1)[1])
    assert per_forward > 1.0
    assert main(argv[:-2] + ["--temperature", "-2"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_info_describes_the_model(ckpt, capsys):
    assert main(["info", "--model", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "qwen2" in out and "attention=causal" in out and "4/2 heads of 16" in out


def test_errors_exit_2_with_the_reason(tmp_path, capsys):
    assert main(["generate", "hi", "--model", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["generate", "hi", "--model", str(tmp_path), "--dtype", "int3"]) == 2
    assert "dtype" in capsys.readouterr().err


def test_a_bad_document_request_fails_before_the_model_loads(monkeypatch, capsys):
    import blockgen.cli as cli

    monkeypatch.setattr(cli, "_load", lambda args: pytest.fail("the model was loaded"))
    for argv, named in ((["--words", "-5"], "words=-5"), (["--candidates", "99"], "candidates=99"),
                        (["--temperature", "-1"], "temperature")):
        assert main(["write", "report", "tides", *argv]) == 2
        assert named in capsys.readouterr().err
    assert main(["write", "story", "  "]) == 2 and "premise" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_command_on_the_default():
    result = subprocess.run(
        [sys.executable, "-m", "blockgen.cli", "generate", "What is the capital of France?", "--max-new-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.slow
def test_example_script_runs():
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "load_and_generate.py"
    result = subprocess.run(
        [sys.executable, str(script), "Name one planet."], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "llama, 30 layers" in result.stdout and "family: Family(" in result.stdout


def test_write_command_writes_and_resumes(tmp_path, capsys):
    from helpers import diffusion_checkpoint

    path = diffusion_checkpoint(tmp_path / "bd", max_position_embeddings=1024)
    argv = ["write", "report", "how tides work", "--words", "90", "--out", str(tmp_path / "doc"), "--model", str(path),
            "--paragraph-words", "40", "--block-size", "4", "--threshold", "0.5", "--planner", "template"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "written to" in err and "tokens/forward" in err and " paragraphs, " in err
    first = (tmp_path / "doc" / "document.md").read_text()
    assert first.startswith("# How tides work")
    assert main(argv + ["--resume"]) == 0  # a finished state resumes to the same document
    assert (tmp_path / "doc" / "document.md").read_text() == first
    assert main(["write", "story", "x", "--words", "0", "--out", str(tmp_path / "d2"), "--model", str(path)]) == 2
    assert "words" in capsys.readouterr().err


@pytest.mark.slow
def test_story_example_runs(tmp_path):
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "story.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path), "90"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    assert "## The storm warning" in result.stdout and (tmp_path / "document.html").is_file()


def test_adapt_command_runs_stops_and_resumes(ckpt, tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text("the river runs to the sea and the sea runs to the sky. " * 40)
    argv = ["adapt", str(ckpt), "--out", str(tmp_path / "run"), "--data", str(data), "--steps", "4",
            "--batch-size", "2", "--seq-len", "32", "--lora-rank", "2", "--block-sizes", "1,4", "--device", "cpu"]
    assert main(argv + ["--stop-after", "2"]) == 0
    assert "stopped (continue with --resume)" in capsys.readouterr().err
    assert main(argv) == 2  # the run exists: continuing needs --resume
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert "finished: step 4/4" in capsys.readouterr().err
    lm = blockgen.load(tmp_path / "run")
    assert lm.family.block_size == 4 and lm.family.attention.value == "block_causal"
    assert main(["adapt", str(ckpt), "--out", str(tmp_path / "x"), "--data", str(data), "--block-sizes", "4,2"]) == 2
    assert "block_sizes" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "write", "adapt", "serve", "info"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and "usage: blockgen" in capsys.readouterr().out


def test_write_help_shows_the_writers_own_decoding_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["write", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--temperature TEMPERATURE (default: 0.7)" in text and "says (default: 0.8)" in text  # dry_multiplier
    assert "+17% time" in text  # a percent sign in a description is text, not a format
