"""Options models: pydantic models that validate keyword options at the boundary and name the first bad one."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ValidationError

from blockgen.errors import invalid_argument


class Options(BaseModel):
    """Base of every options model (generation, writer, adaptation). `build(**options)` raises InvalidArgumentError
    naming the option and its value instead of pydantic's ValidationError."""

    @classmethod
    def build(cls, **options) -> Self:
        try:
            return cls(**options)
        except ValidationError as exc:
            raise invalid_argument(exc) from None
