"""How every EdgeSense process logs: one line a record, on stderr.

Here rather than in the CLI because processes the CLI does not start
directly log the same way (the delivery service's sender processes, started
as `python -m`), and a service must not import the composition root.
"""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(service: str, verbose: bool = False) -> None:
    """Timestamped lines naming the service (unless `edgesense up` names it
    already), and third-party libraries that talk too much quietened."""
    # Under `edgesense up` the parent prefixes each line with the service name.
    name = "" if os.environ.get("EDGESENSE_LOG_FORMAT") == "short" else f" {service}"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s{name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO (`up`'s health checks, one a poll).
    for noisy in ("alembic.runtime.plugins", "transitions", "amqtt", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
