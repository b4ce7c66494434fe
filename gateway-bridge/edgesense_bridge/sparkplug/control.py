"""The payloads the bridge publishes as a Sparkplug host application.

- `rebirth_payload`: an NCMD asking an edge node to publish its NBIRTH and
  DBIRTHs again (the metric `Node Control/Rebirth` = true, spec 6.4.x): what
  a host does when it holds data it cannot decode without guessing (an alias
  from a BIRTH it never saw, a sequence gap).
- `state_payload`: the host's STATE in Sparkplug 3.0's form, JSON
  `{"online": bool, "timestamp": ms}` (not protobuf, unlike everything else):
  published retained on spBv1.0/STATE/{host_id} when the bridge connects and
  registered as its Will with online = false, so edge nodes that wait for
  their primary host know whether it is there. `state_says_offline` reads
  one: an offline STATE on the host's own topic is answered with online.

Pure: no transport library (the pure-rules import-linter contract).
"""

from __future__ import annotations

import json
from typing import Final

from edgesense.common.sparkplug_names import REBIRTH_METRIC
from edgesense.sparkplug import sparkplug_b_pb2 as spb


def rebirth_payload(now_ms: int) -> bytes:
    """The NCMD payload that asks an edge node for a rebirth."""
    payload = spb.Payload(
        timestamp=now_ms,
        metrics=[spb.Payload.Metric(name=REBIRTH_METRIC, datatype=spb.Boolean, boolean_value=True)],
    )
    return payload.SerializeToString()


# A STATE payload is a few dozen bytes: anything much larger is not one, and
# is not parsed.
STATE_MAX_BYTES: Final = 1024


def state_says_offline(payload: bytes) -> bool:
    """A STATE payload with `"online": false` (anything else, or not JSON: no)."""
    if len(payload) > STATE_MAX_BYTES:
        return False
    try:
        state = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(state, dict) and state.get("online") is False


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """The host application's STATE message (Sparkplug 3.0), compact UTF-8 JSON."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()
