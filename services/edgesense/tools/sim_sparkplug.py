"""What `edgesense simulate --sparkplug` publishes: a Sparkplug B edge node.

The gateway is the edge node, its devices are the node's devices, the
project is the group (the bridge maps them back the same way):

    spBv1.0/{project}/NBIRTH|NDEATH|NCMD/{gateway}
    spBv1.0/{project}/DBIRTH|DDATA|DDEATH/{gateway}/{device}

`EdgeNode` holds one edge node's Sparkplug state and encodes its payloads
(with our compiled schema, edgesense.sparkplug.sparkplug_b_pb2: the tools may
not import the bridge); the simulator publishes them. Sparkplug 3.0's rules,
which a host application relies on:

- bdSeq: 0 on the first MQTT connection, one more on each next one (255
  wraps to 0). The connection's Will (NDEATH) and its NBIRTHs carry the same
  bdSeq (Int64), so a host can tell an NDEATH of an older connection, which
  the broker may deliver late, from the current one.
- seq: 0 in an NBIRTH, then one more in each message of the node (DBIRTH,
  DDATA, DDEATH), 255 wrapping to 0. An NDEATH has none.
- aliases: the NBIRTH declares `bdSeq` and `Node Control/Rebirth` (Boolean,
  false); each DBIRTH declares each field of its device's readings with its
  name, an alias unique across the node and a datatype (`datatype_of`:
  Double for numbers, Boolean, String) and its current value. DDATA then
  carries aliases and values only, as gateways save bandwidth.
- an NCMD `Node Control/Rebirth` = true asks for the births again: seq
  starts at 0 again, bdSeq stays (same connection).

QoS: births and deaths as the specification says (NBIRTH, DBIRTH, DDEATH 0;
the NDEATH, Will or published, 1). DDATA is QoS 0 in the specification; we
publish it with QoS 1, so that the broker acknowledges each one (QoS 0 loses
messages whenever the bridge or the network hiccups, and the broker queues
only QoS 1 for a subscriber that is away).

An edge node sends no data before its births, on each MQTT connection. A
DDATA its connection left unacknowledged is therefore not resent as it was
(paho would, before the new NBIRTH, with the old session's seq): the
simulator sends it `again`, after the new connection's births, as a new DDATA
of that session (the next seq, the reading's own timestamp). That is at
least once: one the broker had taken but whose PUBACK the connection lost
reaches a host twice, under two seqs (Sparkplug has no message ids). What a
kill -9 leaves unacknowledged is lost; the Will's NDEATH says the node died.

Pure: no MQTT here (the pure-rules contract in pyproject.toml).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from edgesense.common.sparkplug_names import (
    BD_SEQ,
    BD_SEQ_MODULUS,
    NAMESPACE,
    REBIRTH_METRIC,
    SEQ_MODULUS,
)
from edgesense.sparkplug import sparkplug_b_pb2 as spb
from edgesense.tools.sim_devices import Outgoing

BIRTH_QOS = 0
DEATH_QOS = 0  # DDEATH
NDEATH_QOS = 1
DATA_QOS = 1  # not the specification's 0: see the module docstring

Value = bool | int | float | str


class BadCommand(ValueError):
    """An NCMD that is not a Sparkplug B payload."""


def datatype_of(value: Value) -> int:
    """The Sparkplug datatype a reading's value is declared with."""
    if isinstance(value, bool):
        return spb.Boolean
    if isinstance(value, int | float):
        return spb.Double
    if isinstance(value, str):
        return spb.String
    raise TypeError(f"no Sparkplug datatype for {type(value).__name__} {value!r}")


def _set_value(metric: spb.Payload.Metric, datatype: int, value: Value) -> None:
    if datatype == spb.Boolean:
        metric.boolean_value = bool(value)
    elif datatype == spb.Double:
        metric.double_value = float(value)
    else:
        metric.string_value = str(value)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def topic(group: str, kind: str, node: str, device: str | None = None) -> str:
    tail = f"/{device}" if device is not None else ""
    return f"{NAMESPACE}/{group}/{kind}/{node}{tail}"


def rebirth_requested(payload: bytes) -> bool:
    """Whether an NCMD asks for a rebirth (`Node Control/Rebirth` = true)."""
    command = spb.Payload()
    try:
        command.ParseFromString(payload)
    except Exception as exc:  # protobuf's DecodeError, or what upb raises instead
        raise BadCommand(f"an NCMD that is not a Sparkplug B payload ({exc})") from None
    return any(
        metric.name == REBIRTH_METRIC
        and metric.WhichOneof("value") == "boolean_value"
        and metric.boolean_value
        for metric in command.metrics
    )


class EdgeNode:
    """One edge node's session state (bdSeq, seq, aliases) and its payloads.

    `next_connection` may run on the MQTT client's thread (before it
    reconnects): it only replaces `bd_seq`. Everything else runs on the
    publishing thread, in the order the messages are published, so the seq
    numbers follow that order.
    """

    def __init__(
        self,
        group: str,
        node: str,
        devices: Sequence[str],
        fields: Sequence[str],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.group, self.node, self.clock = group, node, clock
        self.bd_seq = 0
        self._seq = 0
        self._fields = tuple(fields)
        self.aliases = {
            device: {name: 1 + d * len(fields) + f for f, name in enumerate(fields)}
            for d, device in enumerate(devices)
        }
        self._types: dict[str, dict[str, int]] = {}  # by device, from its DBIRTH

    def topic(self, kind: str, device: str | None = None) -> str:
        return topic(self.group, kind, self.node, device)

    @property
    def command_topic(self) -> str:
        return self.topic("NCMD")

    def will(self) -> tuple[str, bytes]:
        """The NDEATH of the current connection: the Will to connect with."""
        return self.topic("NDEATH"), self._ndeath_payload()

    def next_connection(self) -> tuple[str, bytes]:
        """A new MQTT connection is coming: the next bdSeq, and its Will."""
        self.bd_seq = (self.bd_seq + 1) % BD_SEQ_MODULUS
        return self.will()

    def births(self, current: Mapping[str, Mapping[str, Value]]) -> list[Outgoing]:
        """NBIRTH (seq 0) and a DBIRTH per device, declaring every field of
        `current` (device -> field -> its value now)."""
        self._seq = 0
        nbirth = self._payload()
        self._metric(nbirth, BD_SEQ, spb.Int64).long_value = self.bd_seq
        self._metric(nbirth, REBIRTH_METRIC, spb.Boolean).boolean_value = False
        out = [Outgoing(self.topic("NBIRTH"), nbirth.SerializeToString(), BIRTH_QOS, False)]
        for device, values in current.items():
            missing = set(self._fields) - set(values)
            if missing:
                raise ValueError(f"device {device}'s birth lacks {', '.join(sorted(missing))}")
            dbirth = self._payload()
            types = self._types[device] = {}
            for name in self._fields:
                value = values[name]
                types[name] = datatype_of(value)
                metric = self._metric(dbirth, name, types[name])
                metric.alias = self.aliases[device][name]
                _set_value(metric, types[name], value)
            out.append(
                Outgoing(self.topic("DBIRTH", device), dbirth.SerializeToString(), BIRTH_QOS, False)
            )
        return out

    def data(self, device: str, reading: Mapping[str, Value]) -> Outgoing:
        """A DDATA of `reading`, its fields by alias only."""
        types = self._types.get(device)
        if types is None:
            raise ValueError(f"device {device} has no DBIRTH in this session")
        ddata = self._payload()
        aliases = self.aliases[device]
        for name, value in reading.items():
            if name not in types:
                raise ValueError(f"device {device}'s DBIRTH declared no field {name!r}")
            metric = ddata.metrics.add()
            metric.alias = aliases[name]
            _set_value(metric, types[name], value)
        return Outgoing(self.topic("DDATA", device), ddata.SerializeToString(), DATA_QOS)

    def again(self, ddata: bytes) -> bytes:
        """A DDATA encoded earlier, with this session's next seq: the same
        reading (values, aliases, timestamp) as a new message, after births
        that came since (a reconnect's, a rebirth's)."""
        payload = spb.Payload.FromString(ddata)
        payload.seq = self._seq
        self._seq = (self._seq + 1) % SEQ_MODULUS
        return payload.SerializeToString()

    def deaths(self) -> list[Outgoing]:
        """A DDEATH per device born in this session, then the NDEATH: a clean stop."""
        out = [
            Outgoing(
                self.topic("DDEATH", device), self._payload().SerializeToString(), DEATH_QOS, False
            )
            for device in self._types
        ]
        self._types = {}
        topic_, payload = self.will()
        return [*out, Outgoing(topic_, payload, NDEATH_QOS, False)]

    def _payload(self) -> spb.Payload:
        payload = spb.Payload(timestamp=self.clock(), seq=self._seq)
        self._seq = (self._seq + 1) % SEQ_MODULUS
        return payload

    def _ndeath_payload(self) -> bytes:
        ndeath = spb.Payload(timestamp=self.clock())  # no seq: the broker may send it any time
        self._metric(ndeath, BD_SEQ, spb.Int64).long_value = self.bd_seq
        return ndeath.SerializeToString()

    @staticmethod
    def _metric(payload: spb.Payload, name: str, datatype: int) -> spb.Payload.Metric:
        metric = payload.metrics.add()
        metric.name, metric.datatype = name, datatype
        return metric
