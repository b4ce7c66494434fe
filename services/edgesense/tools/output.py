"""Plain-text output of the tools: aligned tables, `key: value` blocks, raw JSON.

Values come from the API or, for `receive`, from anyone who can reach the
port, so every cell passes through `clean()`: control characters (escape
sequences that could rewrite the terminal, newlines that could fake a line)
are shown as `\\xNN` instead of being written.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
Column = tuple[str, str, Callable[[Mapping[str, Any]], object] | None]


def clean(value: object) -> str:
    """One printable line for any value; lists become `a, b`, None and [] become `-`."""
    if value is None or value == [] or value == "":
        return "-"
    if isinstance(value, list | tuple):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    else:
        text = str(value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def column(
    header: str, key: str, get: Callable[[Mapping[str, Any]], object] | None = None
) -> Column:
    """A table column: its header, the field it shows, or a function of the row."""
    return (header, key, get)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> list[str]:
    """Lines of a table, columns two spaces apart; the last column is not padded."""
    cells = [[header for header, _, _ in columns]]
    for row in rows:
        cells.append([clean(get(row) if get else row.get(key)) for _, key, get in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]


def details(fields: Sequence[tuple[str, object]]) -> list[str]:
    """`key: value` lines with the values aligned."""
    width = max((len(key) for key, _ in fields), default=0) + 1
    return [f"{key + ':':<{width}} {clean(value)}" for key, value in fields]


def emit(lines: Iterable[str], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    for line in lines:
        print(line, file=stream)
    stream.flush()


def emit_json(body: object, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    json.dump(body, stream, indent=2, ensure_ascii=False)
    print(file=stream, flush=True)


def say_empty(what: str) -> None:
    """A note on stderr, so that stdout stays a table (of headers only)."""
    print(f"no {what}", file=sys.stderr, flush=True)


def say_more(shown: str, how: str = "--limit N shows N, --limit 0 all") -> None:
    """A note on stderr that a listing stopped with more left, and `how` to see them."""
    print(f"{shown}; there are more: {how}", file=sys.stderr, flush=True)
