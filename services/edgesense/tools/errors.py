"""The errors of the command-line tools, each with the exit code it ends in.

    ToolError          (exit_code)
    ├── UsageError     2  a bad option or missing configuration (like argparse's own)
    ├── ApiError       1  the REST API answered 4xx/5xx; carries its google.rpc.Status message
    ├── Unacknowledged 1  `simulate` stopped with messages the broker never acknowledged
    └── CannotConnect  3  the API or the broker does not answer, or a port cannot be bound

`run_tool` is the one place that turns them into `error: …` on stderr and an
exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_CANNOT_CONNECT = 3
EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT

EXIT_CODES_EPILOG = """\
exit codes:
  0  ok
  1  the API answered an error (4xx/5xx), or simulate had unacknowledged messages
  2  usage or configuration error (bad option, no API key)
  3  cannot connect (API, MQTT broker) or cannot listen (receive)
  130  interrupted (Ctrl-C) in the middle of a request
"""


class ToolError(Exception):
    """Base of every error a tool reports; `message` is what the user reads."""

    exit_code = EXIT_API_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ToolError):
    exit_code = EXIT_USAGE


class ApiError(ToolError):
    """An error answer of the REST API: its message and HTTP status."""

    exit_code = EXIT_API_ERROR

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(f"{message} (HTTP {http_status})")
        self.http_status = http_status


class Unacknowledged(ToolError):
    exit_code = EXIT_API_ERROR


class CannotConnect(ToolError):
    exit_code = EXIT_CANNOT_CONNECT


def run_tool(action: Callable[[], int]) -> int:
    """Run one command; a ToolError becomes `error: …` on stderr and its exit code."""
    try:
        return action()
    except ToolError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        # simulate and receive stop cleanly on Ctrl-C; this is Ctrl-C anywhere else.
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
