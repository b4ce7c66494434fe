"""README against the code: every metric it names is one a process exposes,
and every metric a process exposes is named in it (or in deploy/README.md's
monitoring table); the outcomes it lists for edgesense_deliveries_total are
the ones delivery counts; every EDGESENSE_ variable it names is one the code
reads, and every variable the code reads is in README; every REST route is in
one of its route tables. A renamed metric, a
new one, a new outcome or a new setting that README does not follow fails
here, not in an operator's dashboard.

Variables the code reads are the string literals (and f-string patterns) of
the form EDGESENSE_… in `edgesense` and `edgesense_bridge`, the generated
protobuf code left out. README may shorten a run of names: in
"`EDGESENSE_GRPC_TLS_CERT` / `_KEY`" the `_KEY` replaces part of the full
name before it (EDGESENSE_GRPC_TLS_KEY); a shortened name must stand for a
variable the code reads.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Callable

from edgesense.api.openapi import openapi_path
from edgesense.api.rules import load_routes
from edgesense.api.server import default_backends
from edgesense.common.config import Settings
from edgesense.delivery.record.policy import without_attempt
from edgesense.delivery.record.writer import _label
from edgesense.delivery.store.rows import STATUSES, Claimed
from tests.support.metrics import (
    GENERATED,
    PACKAGES,
    REPO,
    exposed_metric_names,
    metric_families,
    our_metric_names,
)

README = REPO / "README.md"
DEPLOY_README = REPO / "deploy" / "README.md"

METRIC = re.compile(r"\bedgesense_[a-z0-9_]+\b")
FULL_VARIABLE = re.compile(r"\bEDGESENSE_[A-Z0-9_]*[A-Z0-9]\b")
# `_KEY`, `_DELIVERY_`, `_CLIENT_AUTH=require`: a shortened name in backticks.
SHORT_VARIABLE = re.compile(r"`(_[A-Z][A-Z0-9_]*)(?:=[^`]*)?`")

# Read by the code but not for users to set, so README leaves them out.
INTERNAL = {
    # delivery's JSON handed to its own sender child processes
    "EDGESENSE_SENDER_OPTIONS",
    # `edgesense up` sets it for its children so their log lines are short
    "EDGESENSE_LOG_FORMAT",
}
# In README for developers (running the test suite); the tests read them.
TEST_SETTINGS = {
    "EDGESENSE_TEST_POSTGRES_URL",
    "EDGESENSE_TEST_STRICT",
    "EDGESENSE_CONSOLE_SCREENSHOTS",
}


def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_variables() -> tuple[set[str], list[re.Pattern[str]]]:
    """Names the code reads, and patterns for names it builds (f-strings)."""
    names: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            if path.relative_to(folder).parts[0] == GENERATED:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if FULL_VARIABLE.fullmatch(node.value):
                        names.add(node.value)
                elif isinstance(node, ast.JoinedStr) and (built := name_pattern(node)):
                    patterns.append(built)
    return names, patterns


def name_pattern(node: ast.JoinedStr) -> re.Pattern[str] | None:
    """f"EDGESENSE_{name.upper()}_METRICS_ADDR" as a pattern; None for other f-strings."""
    pattern = ""
    for part in node.values:
        if not isinstance(part, ast.Constant):
            pattern += "[A-Z0-9_]+"
        elif isinstance(part.value, str) and re.fullmatch("[A-Z0-9_]*", part.value):
            pattern += re.escape(part.value)
        else:
            return None  # words around a value: a message, not a name
    return re.compile(pattern) if pattern.startswith("EDGESENSE_") else None


def expansions(full: str, short: str) -> list[str]:
    """The names `short` can stand for after `full`, the likeliest first.

    It replaces whole words of `full`: `_X_` (ending in an underscore) some
    words in the middle or at the start, `_X` the last words. The fewer words
    replaced, the likelier: `_DELIVERY_` after EDGESENSE_REGISTRY_METRICS_ADDR
    is EDGESENSE_DELIVERY_METRICS_ADDR before EDGESENSE_DELIVERY_ADDR.
    """
    starts = [i for i, char in enumerate(full) if char == "_"]
    if short.endswith("_"):
        spans = [(i, j + 1) for i in starts for j in starts if j > i]
    else:
        spans = [(i, len(full)) for i in starts]
    spans.sort(key=lambda span: span[1] - span[0])
    return [full[:i] + short + full[j:] for i, j in spans]


def readme_variables(read: Callable[[str], bool]) -> tuple[set[str], set[str]]:
    """The variables README names, and the shortened names that match none the code reads."""
    text = readme()
    named = set(FULL_VARIABLE.findall(text))
    unresolved: set[str] = set()
    for short in SHORT_VARIABLE.finditer(text):
        before = FULL_VARIABLE.findall(text[: short.start()])
        assert before, f"{short[1]} shortens no name before it"
        meant = next((name for name in expansions(before[-1], short[1]) if read(name)), None)
        if meant is None:
            unresolved.add(f"{short[1]} (after {before[-1]})")
        else:
            named.add(meant)
    return named, unresolved


def code_reads() -> tuple[set[str], list[re.Pattern[str]], Callable[[str], bool]]:
    names, patterns = code_variables()

    def read(name: str) -> bool:
        return name in names or any(pattern.fullmatch(name) for pattern in patterns)

    return names, patterns, read


def test_every_metric_readme_names_is_exposed() -> None:
    named = {
        name
        for name in METRIC.findall(readme())
        if importlib.util.find_spec(name) is None  # `edgesense_bridge` is a package
    }
    assert len(named) >= 8, "README's metric names were not found"
    unknown = named - exposed_metric_names()
    assert not unknown, f"README names metrics no process exposes: {sorted(unknown)}"


def monitoring_table() -> str:
    """deploy/README.md's "What to monitor" section: every metric, with its labels."""
    return DEPLOY_README.read_text(encoding="utf-8").split("## What to monitor", 1)[1]


def test_every_metric_a_process_exposes_is_named_in_readme() -> None:
    named = set(METRIC.findall(readme())) | set(METRIC.findall(monitoring_table()))
    ours = our_metric_names()
    assert len(ours) >= 20, "the code's metrics were not found"
    missing = ours - named
    assert not missing, (
        f"neither README nor deploy/README.md's monitoring table names: {sorted(missing)}"
    )


# "(succeeded, retried, ...)", in parentheses or not: the words up to the first
# that a comma does not follow.
OUTCOME_LIST = r"\(?((?:[a-z]+, )*[a-z]+)"


def listed_outcomes(text: str, after: str) -> set[str]:
    found = re.search(re.escape(after) + " " + OUTCOME_LIST, " ".join(text.split()))
    assert found, f"no list of outcomes after {after}"
    return set(found[1].split(", "))


def counted_outcomes() -> set[str]:
    """Every `outcome` label delivery counts: the literal ones of its
    `DELIVERIES.labels(...)` calls, and what `record.writer._label` (the one
    other argument those calls take) makes of an outcome of every status, with
    an attempt made or not."""
    literal: set[str] = set()
    for path in (PACKAGES["edgesense"] / "delivery").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "labels"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "DELIVERIES"
            ):
                continue
            (label,) = node.args
            if isinstance(label, ast.Constant) and isinstance(label.value, str):
                literal.add(label.value)
            else:  # _label(...): the outcomes it makes are read below
                unread = f"{path.name}: an outcome this test cannot read: {ast.unparse(node)}"
                assert isinstance(label, ast.Call), unread
                assert ast.unparse(label.func) == "_label", unread
    claimed = Claimed(1, "dlv_1", "wh_1", "evt_1", 0, 0, b"")
    made = {
        _label(without_attempt(claimed, status, "", 0.0)._replace(attempt=attempt))
        for status in STATUSES
        for attempt in (0, 1)
    }
    return literal | made


def test_the_outcomes_readme_lists_are_the_ones_delivery_counts() -> None:
    counted = counted_outcomes()
    assert {"succeeded", "expired"} <= counted, "the code's outcomes were not found"
    assert listed_outcomes(readme(), "`edgesense_deliveries_total{outcome}`") == counted
    table = listed_outcomes(monitoring_table(), "`edgesense_deliveries_total` | `outcome`")
    assert table == counted, "deploy/README.md's monitoring table"
    (family,) = (f for f in metric_families() if f.name == "edgesense_deliveries")
    assert listed_outcomes(family.documentation, "outcomes:") == counted, "the help text"


def test_every_variable_readme_names_is_read_by_the_code() -> None:
    _, _, read = code_reads()
    named, unresolved = readme_variables(read)
    assert not unresolved, f"README shortens names the code does not read: {sorted(unresolved)}"
    unknown = {name for name in named - TEST_SETTINGS if not read(name)}
    assert not unknown, f"README names variables the code never reads: {sorted(unknown)}"


def test_the_test_settings_readme_names_are_read_by_the_tests() -> None:
    conftest = (REPO / "tests" / "conftest.py").read_text(encoding="utf-8")
    assert {name for name in TEST_SETTINGS if name not in conftest} == set()
    assert set(FULL_VARIABLE.findall(readme())) >= TEST_SETTINGS


def test_every_variable_the_code_reads_is_in_readme() -> None:
    names, patterns, read = code_reads()
    named, _ = readme_variables(read)
    missing = names - named - INTERNAL
    assert not missing, f"README does not document: {sorted(missing)}"
    for pattern in patterns:
        assert any(pattern.fullmatch(name) for name in named), (
            f"README documents no variable of the form {pattern.pattern}"
        )
    assert not INTERNAL - names, (
        f"INTERNAL lists names the code no longer reads: {INTERNAL - names}"
    )


def test_shortened_names_replace_the_fewest_words_that_make_a_name_read() -> None:
    read = {
        "EDGESENSE_GRPC_TLS_KEY",
        "EDGESENSE_DELIVERY_ADDR",
        "EDGESENSE_DELIVERY_METRICS_ADDR",
        "EDGESENSE_BRIDGE_PIPELINE_DEPTH",
    }

    def meant(full: str, short: str) -> str:
        return next(name for name in expansions(full, short) if name in read)

    assert meant("EDGESENSE_GRPC_TLS_CERT", "_KEY") == "EDGESENSE_GRPC_TLS_KEY"
    assert meant("EDGESENSE_REGISTRY_ADDR", "_DELIVERY_ADDR") == "EDGESENSE_DELIVERY_ADDR"
    assert (
        meant("EDGESENSE_REGISTRY_METRICS_ADDR", "_DELIVERY_") == "EDGESENSE_DELIVERY_METRICS_ADDR"
    )
    assert (
        meant("EDGESENSE_BRIDGE_BATCH_SIZE", "_PIPELINE_DEPTH") == "EDGESENSE_BRIDGE_PIPELINE_DEPTH"
    )


def test_every_rest_route_is_in_a_readme_route_table() -> None:
    """Each route the API serves (from the protos' annotations) is a row of a
    README route table, written `METHOD /path` with the JSON names of its
    path variables, as OpenAPI has them."""
    services = default_backends(Settings.from_env({}, dev=True))
    rows = set(re.findall(r"^\| `([A-Z]+ /[^`]*)` \|", readme(), re.MULTILINE))
    routes = {f"{r.http_method} {openapi_path(r)}" for r in load_routes(services)}
    assert routes - rows == set()
