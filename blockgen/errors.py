"""Typed errors. Each names the file, tensor, field or parameter it is about."""

from __future__ import annotations

from pathlib import Path


class BlockgenError(Exception):
    """Base class of every error blockgen raises on purpose."""


class InvalidArgumentError(BlockgenError, ValueError):
    """A caller passed a value blockgen cannot use."""

    def __init__(self, parameter: str, value: object, reason: str):
        self.parameter, self.value, self.reason = parameter, value, reason
        super().__init__(f"{parameter}={value!r}: {reason}")


def invalid_argument(exc) -> InvalidArgumentError:
    """The first problem of a pydantic ValidationError as an InvalidArgumentError naming the option and value."""
    err = exc.errors()[0]
    name = ".".join(str(p) for p in err["loc"]) or "options"
    return InvalidArgumentError(name, err.get("input"), err["msg"])


class CheckpointError(BlockgenError):
    """Something is wrong with a checkpoint on disk."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The directory or file does not exist, or holds no usable weights."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle-based checkpoint (.bin, .pt, .pth, .ckpt). It is refused and never opened."""


class CorruptCheckpointError(CheckpointError):
    """A weight file that cannot be parsed (truncated, bad header, bad index)."""


class TensorError(CheckpointError):
    """A tensor is missing, unexpected or has the wrong shape."""

    def __init__(self, path: str | Path, tensor: str, message: str):
        self.tensor = tensor
        super().__init__(path, f"tensor {tensor!r}: {message}")


class ConfigError(BlockgenError):
    """A config.json (or GGUF metadata) that blockgen cannot build a model from."""

    def __init__(self, path: str | Path, field: str, message: str):
        self.path, self.field = Path(path), field
        super().__init__(f"{self.path}: field {field!r}: {message}")


class UnsupportedArchitectureError(ConfigError):
    """The checkpoint's architecture is not one blockgen implements."""


class DefaultModelUnavailableError(BlockgenError):
    """The embedded default model's package is not installed."""


class OutlineError(BlockgenError):
    """An outline (file or object) that cannot be used: malformed, empty, or with budgets that do not fit."""

    def __init__(self, source: str, message: str):
        self.source = source
        super().__init__(f"{source}: {message}")


class DocumentStateError(BlockgenError):
    """A saved document state that cannot be resumed: unreadable, corrupt, or written for another request."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


class ImageModelError(BlockgenError):
    """A text-to-image pipeline that cannot be used: missing or broken directory, not text-to-image, unsafe weights."""

    def __init__(self, source: str | Path, message: str):
        self.source = str(source)
        super().__init__(f"{source}: {message}")
