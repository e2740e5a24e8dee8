"""blockgen: long documents written with block-diffusion language models."""

from blockgen.errors import (
    BlockgenError,
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    CorruptCheckpointError,
    DefaultModelUnavailableError,
    InvalidArgumentError,
    TensorError,
    UnsafeCheckpointError,
    UnsupportedArchitectureError,
)
from blockgen.runtime import LoadedModel, load


def __getattr__(name):  # the document API pulls in sentence-transformers: import it on first use
    if name in ("write_report", "write_story"):
        from blockgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'blockgen' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "BlockgenError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "CorruptCheckpointError",
    "DefaultModelUnavailableError",
    "InvalidArgumentError",
    "LoadedModel",
    "TensorError",
    "UnsafeCheckpointError",
    "UnsupportedArchitectureError",
    "load",
    "write_report",
    "write_story",
]
