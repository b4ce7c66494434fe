"""HttpRule path templates: parse `/v1/{name=projects/*}/items:verb`, match raw paths.

The grammar is the one in google/api/http.proto:

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Matching works on the raw (still percent-encoded) request path, split on "/",
so an encoded slash never separates segments. Literals compare raw, as in
grpc-gateway. `*` matches one non-empty segment; `**` matches zero or more
(at most one `**` per template). A variable of one segment is fully
percent-decoded; a multi-segment variable (`{name=a/*}`, `{path=**}`) keeps
the escapes of RFC 6570 reserved characters (`%2F` stays `%2F`), which is the
default of the HttpRule spec, Envoy and grpc-gateway's
UnescapingModeAllExceptReserved. A template without a verb matches a last
segment that contains a colon as an ordinary segment.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Literal

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LITERAL = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+\Z")
_RESERVED = frozenset(":/?#[]@!$&'()*+,;=")
_HEX = frozenset(string.hexdigits)


class TemplateSyntaxError(ValueError):
    """A path template does not follow the HttpRule grammar."""


class MalformedPathError(ValueError):
    """A request path has a bad percent escape or is not UTF-8 once decoded."""


@dataclass(frozen=True)
class Segment:
    kind: Literal["literal", "wildcard", "deep"]
    text: str = ""


@dataclass(frozen=True)
class Variable:
    """A `{field.path=...}` capture over `segments[start:end]` of the template."""

    field_path: tuple[str, ...]
    start: int
    end: int
    multi_segment: bool

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True)
class PathTemplate:
    source: str
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str | None

    def specificity(self) -> tuple[tuple[int, ...], int]:
        """Sort key: templates with literals before wildcards are tried first."""
        rank = {"literal": 0, "wildcard": 1, "deep": 2}
        return tuple(rank[s.kind] for s in self.segments), 0 if self.verb else 1

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The decoded variable values if `raw_path` matches, else None.

        Raises MalformedPathError when the path matches but a captured value
        cannot be decoded.
        """
        if not raw_path.startswith("/"):
            return None
        components = raw_path[1:].split("/")
        if self.verb is not None:
            suffix = ":" + self.verb
            if not components[-1].endswith(suffix):
                return None
            components[-1] = components[-1][: -len(suffix)]
        spans = self._spans(components)
        if spans is None:
            return None
        values: dict[str, str] = {}
        for var in self.variables:
            first, last = spans[var.start][0], spans[var.end - 1][1]
            raw = "/".join(components[first:last])
            values[var.name] = percent_decode(raw, keep_reserved=var.multi_segment)
        return values

    def _spans(self, components: list[str]) -> list[tuple[int, int]] | None:
        """For each template segment, the [first, last) range of components it covers."""
        deep = next((i for i, s in enumerate(self.segments) if s.kind == "deep"), None)
        fixed = len(self.segments) - (0 if deep is None else 1)
        if len(components) < fixed or (deep is None and len(components) != fixed):
            return None
        spans: list[tuple[int, int]] = []
        pos = 0
        for segment in self.segments:
            if segment.kind == "deep":
                width = len(components) - fixed
                spans.append((pos, pos + width))
                pos += width
                continue
            component = components[pos]
            if segment.kind == "literal" and component != segment.text:
                return None
            if segment.kind == "wildcard" and not component:
                return None
            spans.append((pos, pos + 1))
            pos += 1
        return spans


def percent_decode(text: str, *, keep_reserved: bool) -> str:
    """Decode %XX escapes; with keep_reserved, escapes of reserved characters stay."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "%":
            out += char.encode()
            i += 1
            continue
        digits = text[i + 1 : i + 3]
        if len(digits) != 2 or not _HEX.issuperset(digits):
            raise MalformedPathError(f"malformed path escape {text[i : i + 3]!r}")
        byte = int(digits, 16)
        if keep_reserved and chr(byte) in _RESERVED:
            out += text[i : i + 3].encode()
        else:
            out.append(byte)
        i += 3
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise MalformedPathError(f"path segment {text!r} is not UTF-8 once decoded") from None


def parse_template(source: str) -> PathTemplate:
    """Compile an HttpRule path template; raises TemplateSyntaxError."""
    if not source.startswith("/"):
        raise TemplateSyntaxError(f"template {source!r} must start with '/'")
    body, verb = _split_verb(source[1:], source)
    segments: list[Segment] = []
    variables: list[Variable] = []
    for part in _split_top_level(body, source):
        if part.startswith("{"):
            if not part.endswith("}"):
                raise TemplateSyntaxError(f"template {source!r}: bad variable {part!r}")
            name, _, pattern = part[1:-1].partition("=")
            inner = [_segment(p, source) for p in (pattern or "*").split("/")]
            field_path = tuple(name.split("."))
            if not all(_IDENT.match(ident) for ident in field_path):
                raise TemplateSyntaxError(f"template {source!r}: bad field path {name!r}")
            multi = len(inner) > 1 or inner[0].kind == "deep"
            start = len(segments)
            segments.extend(inner)
            variables.append(Variable(field_path, start, len(segments), multi))
        else:
            segments.append(_segment(part, source))
    if sum(s.kind == "deep" for s in segments) > 1:
        raise TemplateSyntaxError(f"template {source!r}: '**' may appear only once")
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise TemplateSyntaxError(f"template {source!r}: a variable is bound twice")
    return PathTemplate(source, tuple(segments), tuple(variables), verb)


def _split_verb(body: str, source: str) -> tuple[str, str | None]:
    colon = body.rfind(":")
    if colon < 0 or colon < body.rfind("/") or colon < body.rfind("}"):
        return body, None
    verb = body[colon + 1 :]
    if not _LITERAL.match(verb):
        raise TemplateSyntaxError(f"template {source!r}: bad verb {verb!r}")
    return body[:colon], verb


def _split_top_level(body: str, source: str) -> list[str]:
    """Split on '/' outside braces."""
    parts, depth, current = [], 0, ""
    for char in body:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if depth not in (0, 1):
            raise TemplateSyntaxError(f"template {source!r}: unbalanced or nested braces")
        if char == "/" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise TemplateSyntaxError(f"template {source!r}: unbalanced braces")
    parts.append(current)
    return parts


def _segment(text: str, source: str) -> Segment:
    if text == "*":
        return Segment("wildcard")
    if text == "**":
        return Segment("deep")
    if not _LITERAL.match(text):
        raise TemplateSyntaxError(f"template {source!r}: bad segment {text!r}")
    return Segment("literal", text)
