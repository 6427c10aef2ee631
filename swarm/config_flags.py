"""Command-line flags made from a frozen config dataclass, so each default lives once.

    @dataclass(frozen=True)
    class ServeConfig:
        port: int = field(default=0, metadata=flag("gRPC port", default_text="any free port"))

    add_config_flags(parser, ServeConfig)            # --port P  gRPC port (default: any free port)
    config = config_from_args(ServeConfig, args, model=resolved)

A field becomes a flag when its metadata holds a `Flag` (made by `flag(...)`); others
(nested configs, limits) keep their defaults. The flag is `--field-name` (or `Flag.name`),
its default the field's default, its parser taken from the annotation: int, float, str,
Path, a value Enum (choices), a class with a `parse(text)` classmethod (e.g.
`BlockRange`, `PeerAddress`), `X | None`, and `tuple[X, ...]` (several values; one or
more when the field has no default). `Flag.parse` overrides the parser (e.g. a range
check); a ValueError from any parser becomes argparse's usage error with its message.
A field without a default is a required flag. Fields in the same `Flag.group` are
mutually exclusive.

Not here: subcommands and logging (`swarm.cli`), values that need more than one flag or
files (the command computes them and passes them to `config_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

C = TypeVar("C")

_FLAG_KEY = "swarm.flag"


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line."""

    help: str
    """What the flag does; the default is appended as " (default: X)"."""
    name: str | None = None
    """Flag name without dashes; None: the field name with "-" for "_"."""
    metavar: str | None = None
    """Placeholder in usage lines; None: argparse's (or the choices)."""
    default_text: str | None = None
    """How the default reads in --help (e.g. "any free port"); None: the value itself,
    and nothing for a default of None."""
    parse: Callable[[str], Any] | None = None
    """Parser of one value; None: from the field's annotation."""
    choices: tuple[str, ...] | None = None
    """The only values allowed (an Enum field gets its values without this)."""
    group: str | None = None
    """Flags with the same group name exclude each other."""


def flag(help: str, **options: Any) -> Mapping[str, Flag]:
    """Field metadata that makes the field a flag (see `Flag` for the options)."""
    return {_FLAG_KEY: Flag(help, **options)}


def flag_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Flag]]:
    """The fields of dataclass `cls` that are flags, in declaration order."""
    return [(f, f.metadata[_FLAG_KEY]) for f in dataclasses.fields(cls) if _FLAG_KEY in f.metadata]


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, only: tuple[str, ...] | None = None) -> None:
    """Adds one option per flag field of `cls` (or of those named in `only`)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f, spec in flag_fields(cls):
        if only is not None and f.name not in only:
            continue
        target: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup = parser
        if spec.group is not None:
            if spec.group not in groups:
                groups[spec.group] = parser.add_mutually_exclusive_group()
            target = groups[spec.group]
        target.add_argument(f"--{spec.name or f.name.replace('_', '-')}", dest=f.name,
                            **_options(f, spec, hints[f.name]))


def config_from_args(cls: type[C], args: argparse.Namespace, **values: Any) -> C:
    """`cls` made from the parsed flag fields, with `values` added (or overriding)."""
    parsed = {f.name: getattr(args, f.name) for f, _ in flag_fields(cls) if hasattr(args, f.name)}
    return cls(**{**parsed, **values})


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _options(f: dataclasses.Field[Any], spec: Flag, hint: Any) -> dict[str, Any]:
    """argparse keyword arguments for one field."""
    default = _default_of(f)
    required = default is dataclasses.MISSING
    item, several = _item_type(hint)
    options: dict[str, Any] = {"help": spec.help}
    if item is bool and not several:
        options.update(action="store_true", default=bool(default) if not required else False)
        return options
    options["type"] = _checked(spec.parse or _parser_of(item))
    if isinstance(item, type) and issubclass(item, enum.Enum):
        options["choices"] = list(item)
        options["metavar"] = spec.metavar or "{" + ",".join(str(m.value) for m in item) + "}"
    elif not (item is str and spec.choices):
        options["metavar"] = spec.metavar or (spec.name or f.name).upper().replace("-", "_")
    if spec.choices is not None:
        options["choices"] = list(spec.choices)
    if several:
        options.update(nargs="+" if required else "*", action=_StoreTuple)
    if required:
        options["required"] = True
        return options
    options["default"] = default
    shown = spec.default_text if spec.default_text is not None else _shown(default)
    if shown is not None:
        options["help"] = f"{spec.help} (default: {shown})"
    return options


def _shown(default: Any) -> str | None:
    if default is None or default == ():
        return None
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _item_type(hint: Any) -> tuple[Any, bool]:
    """(type of one value, whether the field holds several) for an annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(kept) != 1:
            raise TypeError(f"cannot make a flag of {hint}: give Flag(parse=...)")
        return _item_type(kept[0])
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"cannot make a flag of {hint}: only tuple[X, ...]")
        return args[0], True
    return hint, False


def _parser_of(item: Any) -> Callable[[str], Any]:
    parse = getattr(item, "parse", None)
    if callable(parse):
        return typing.cast(Callable[[str], Any], parse)
    if callable(item):
        return typing.cast(Callable[[str], Any], item)
    raise TypeError(f"cannot make a flag of {item}: give Flag(parse=...)")


class _StoreTuple(argparse.Action):
    """Stores several values as a tuple (what the frozen configs hold), not a list."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, tuple(values or ()))


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` whose ValueError argparse prints as the message itself."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    checked.__name__ = getattr(parse, "__name__", "value")
    return checked
