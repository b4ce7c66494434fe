"""Pieces of the tools' parsers: argument types, subcommands with the exit
codes in their --help, and handlers that import their module only when run.

A handler is a function of the parsed arguments returning the exit code;
`lazy("simulate", "simulate")` imports `edgesense.tools.simulate` (and so
paho) only when `edgesense simulate` runs, and reports its ToolErrors
through `errors.run_tool`.
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Callable, Sequence
from typing import TypeAlias

from edgesense.tools.errors import EXIT_CODES_EPILOG, run_tool

Handler = Callable[[argparse.Namespace], int]


def lazy(module: str, function: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        command: Handler = getattr(importlib.import_module(f"edgesense.tools.{module}"), function)
        return run_tool(lambda: command(args))

    return handler


def comma_list(raw: str) -> list[str]:
    """`a, b,,c` -> ["a", "b", "c"]."""
    return [item.strip() for item in raw.split(",") if item.strip()]


def header(raw: str) -> tuple[str, str]:
    """`Name: value` (as curl's -H) -> ("Name", "value")."""
    name, colon, value = raw.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', not {raw!r}")
    return name.strip(), value.strip()


def bounded(
    kind: Callable[[str], float], low: float, high: float | None = None
) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
        if value < low or (high is not None and value > high):
            top = "" if high is None else f" and at most {high:g}"
            raise argparse.ArgumentTypeError(f"must be at least {low:g}{top}, not {raw}")
        return value

    return parse


def finite(raw: str) -> float:
    """A number as JSON can carry it: not nan nor inf."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {raw}")
    return value


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    check = bounded(int, low, high)
    return lambda raw: int(check(raw))


# A string: argparse's class is generic only for type checkers.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command(
    sub: Subcommands,
    name: str,
    text: str,
    parents: Sequence[argparse.ArgumentParser] = (),
    more: str = "",
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with the exit codes."""
    return sub.add_parser(
        name,
        help=text,
        description=text + (f"\n\n{more}" if more else ""),
        parents=list(parents),
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def group(sub: Subcommands, name: str, text: str) -> Subcommands:
    return command(sub, name, text).add_subparsers(dest="action", required=True, metavar="ACTION")
