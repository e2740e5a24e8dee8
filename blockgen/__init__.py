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
]
