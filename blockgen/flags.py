"""Command-line flags built from options models: one `--flag` per field, with its type, choices and description.

Every flag defaults to None (not given), so the model's own default applies and is declared only there; `given`
collects what the user set, ready for the model's `build`.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Iterable

from pydantic import BaseModel


def _arms(annotation) -> list:
    """The alternatives of a type (the arms of a Union / `X | Y`), without NoneType."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _literal_values(arms: list) -> list:
    return [v for a in arms if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]


def _converter(name: str, arms: list):
    """A function from the flag's text to the field's value (a literal, an int, a float or a string)."""
    literals = _literal_values(arms)
    scalars = [a for a in arms if a in (int, float, str)]

    def convert(text: str):
        if text in literals:
            return text
        for kind in scalars:
            try:
                return kind(text)
            except ValueError:
                continue
        wanted = " or ".join([repr(v) for v in literals] + [k.__name__ for k in scalars])
        raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: {text!r} is not {wanted}")

    return convert


def _sequence_item(annotation):
    """The item type of a tuple[X, ...] / list[X] field, else None."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item = args[0] if args else str
        # Annotated[str, Field(...)]: the type under its constraints (the model checks them)
        return typing.get_args(item)[0] if typing.get_origin(item) is typing.Annotated else item
    return None


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], *, exclude: Iterable[str] = (),
              only: Iterable[str] | None = None, defaults: dict | None = None) -> list[str]:
    """Add one flag per field of `model` (all but `exclude`, or just `only`); returns the field names added.
    `defaults`: what the command uses where it differs from the model's own default (shown in the help).

    A Literal field gets choices; a bool field --name / --no-name; a list or tuple of strings is repeatable
    (--stop a --stop b), a list of numbers is comma-separated (--block-sizes 1,2,4)."""
    exclude, only = set(exclude), None if only is None else set(only)
    added = []
    for name, field in model.model_fields.items():
        if name in exclude or (only is not None and name not in only):
            continue
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "").replace("%", "%%")  # argparse formats help with %
        default = (defaults or {}).get(name, field.get_default(call_default_factory=True))
        if default not in (None, (), []) and "default:" not in help_text:
            shown = default
            if isinstance(default, (list, tuple)):  # strings quoted as JSON would write them ("\n" stays visible)
                shown = " ".join(json.dumps(x) for x in default) if all(isinstance(x, str) for x in default) \
                    else ",".join(map(str, default))
            help_text = f"{help_text} (default: {shown})".strip()
        arms = _arms(field.annotation)
        item = _sequence_item(arms[0]) if len(arms) == 1 else None
        if arms == [bool]:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif item is str:
            parser.add_argument(flag, dest=name, action="append", default=None, help=help_text)
        elif item is not None:
            convert = _converter(name, [item])
            parser.add_argument(flag, dest=name, default=None, help=help_text,
                                type=lambda text, convert=convert: [convert(v) for v in text.split(",")])
        else:
            choices = _literal_values(arms) if all(typing.get_origin(a) is typing.Literal for a in arms) else None
            parser.add_argument(flag, dest=name, default=None, help=help_text, choices=choices,
                                type=None if choices else _converter(name, arms))
        added.append(name)
    return added


def given(args: argparse.Namespace, names: Iterable[str]) -> dict:
    """The options the user set among `names` (flags left out are not passed, so the model's defaults apply)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
