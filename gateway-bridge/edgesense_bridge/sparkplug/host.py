"""SparkplugHost: each edge node's session, one message -> its events.

A Sparkplug edge node names its metrics once, in its NBIRTH (and each device's
in a DBIRTH), often with a numeric alias it then sends in place of the name;
every message of the session carries `seq` (0..255, wrapping); the NBIRTH's
`bdSeq` metric pairs it with the NDEATH the broker publishes as the node's
Will. The host keeps, per (group, edge node), what the births declared and
turns each message into our events:

    NBIRTH / DBIRTH   device.status online (+ device.data: the birth's readings)
    NDATA / DDATA     device.data: metric names (aliases resolved) -> values
    NDEATH            device.status offline for the node and each of its devices
    DDEATH            device.status offline for the device
    NCMD / DCMD / STATE   nothing (ignored: commands and hosts, not data)

Decisions, and why:
- Never guess. A DATA whose node or device has no session, or with an alias
  its birth did not declare (the bridge restarted, or another bridge of a
  shared subscription saw the birth), is rejected whole and answered with a
  rebirth request: the node's next NBIRTH makes the data after it decodable.
  The rejected message itself is acknowledged and counted, not held: holding
  it would need memory per unknown node and a rebirth may never come.
- A sequence gap (seq not last + 1 mod 256, or missing) in an NDATA, DDATA
  or DBIRTH means messages were lost, and a lost NBIRTH or DBIRTH may have
  reassigned the aliases, so the message is never decoded: the node's session
  (its devices with it) is dropped, the message rejected
  ("sparkplug_seq_gap"), the outcome says `seq_gap` and a rebirth is
  requested. Later data is "sparkplug_unknown_node" until the NBIRTH comes.
  A DDEATH with a gap still takes its device offline (no alias is involved),
  and drops the session and asks for a rebirth likewise. A resent message
  (seq already seen: an MQTT QoS 1 redelivery) is a gap too: its seq cannot
  tell it from 256 lost messages.
- Rebirths are rate-limited: one per edge node per `rebirth_interval_seconds`
  and 100 a second overall, so a flood of unknown nodes cannot flood the
  broker with commands. The limiter forgets a node once its interval is past,
  so it holds at most about 100 x interval entries, and when an NBIRTH of
  the node is accepted: the rebirth came, and a gap in the new session must
  not wait for the interval to ask again.
- NDEATH pairs with the NBIRTH by bdSeq, which a node increments (mod 256)
  on each MQTT connection: one from an older connection (its Will fired
  late, after the node reconnected) is ignored ("stale_ndeath"), and so is
  one without bdSeq when the session has one (it cannot be paired). Older
  means up to 127 connections behind the last NBIRTH's bdSeq, mod 256; one
  ahead of it is believed (the node connected again, we missed that birth,
  and that connection died). The last bdSeq of each node outlives its
  session (dropped by a gap, an eviction, a bad birth or the NDEATH itself)
  in a least recently used memory of BD_SEQ_MEMORY nodes (a few hundred
  bytes each, outside max_memory_bytes), so a late stale NDEATH after the
  session is gone is ignored too. A node the host knows nothing of, and one
  whose NDEATH has no bdSeq, is still marked offline: after a bridge restart
  the host has no session, and a real NDEATH must not be lost. The cost,
  with two bridges: one that restarted believes a late stale NDEATH that its
  peer ignores, and delivery stores that offline event (the node's next
  DATA, unknown to both, asks for a rebirth and its NBIRTH puts it online
  again). A node that restarts with bdSeq 0 (the spec's start) and whose
  NBIRTH we missed may have its real NDEATH taken for an older one; its data
  in between asks for a rebirth, whose NBIRTH renews the memory. The events
  are timed at receipt: an NDEATH is a Will, whose payload timestamp (if
  any) is when the node connected, not when it died.
- Historical metrics (`is_historical`: back-filled from a store) are left out
  of the event: its readings are the device's current values. Each DATA
  metric keeps only the last value of a name within one message; earlier ones
  are counted ("duplicate"). bdSeq and `Node Control/*` (`Device Control/*`)
  are the protocol's, not readings, and are left out uncounted.
- Event ids are derived from the project, topic and payload bytes, and from
  what the event is (its kind and device: a message makes at most one event
  of a kind per device), so the same message twice (a resend, or two bridges
  subscribed to it) is stored once by delivery. Not from the event's place in
  the outcome: two bridges that know different devices of a node (one saw a
  DBIRTH the other missed) still give the node's own offline event of an
  NDEATH the same id. NDEATH's device events come sorted by device id.
  Delivery keeps an id forever, and a node whose payloads carry no timestamp
  repeats a DATA's bytes once seq wraps (or in its next session), so the
  ids of DATA, DBIRTH and DDEATH events also take the session's identity: a
  digest of the NBIRTH that began it, which every bridge able to decode the
  data saw. NBIRTH and NDEATH ids come from their own bytes only. Residual
  risk, not counted: within one session, a node without timestamps that
  sends the same DATA bytes 256 messages apart (same seq, same values) gets
  one id for both, and the second is dropped by delivery as a duplicate; and
  so does a rebirth on the same connection whose NBIRTH repeats the last
  byte for byte (same bdSeq and values, no timestamp). A DDEATH the host has
  no session for gets the id of its bytes alone, so two bridges, one with
  the session and one without, store its offline event twice.
- Memory is bounded by construction: at most `max_nodes` node sessions
  holding at most `max_memory_bytes`, least recently used node evicted first
  (its next DATA asks for a rebirth), and a bounded rebirth limiter. What a
  session holds is weighed in bytes, an estimate a little over what
  tracemalloc measures (`memory_bytes`): NODE_BYTES per node, DEVICE_BYTES
  per device, and ENTRY_BYTES plus the name's UTF-8 length for each alias ->
  name entry and each name -> datatype entry, so that neither many aliases of
  one name nor one long name passes the bound at the weight of a metric.
- One edge node cannot crowd out the others: a node holds at most
  `max_devices_per_node` devices (a DBIRTH of one more is rejected
  "too_large", the node's session kept) and at most an eighth of
  `max_memory_bytes` (a birth taking it over is rejected "too_large" and the
  node's session dropped), so no node evicts more than an eighth of the
  others' sessions at once, and an NDEATH makes at most
  `max_devices_per_node` + 1 events.
- A birth voids what it replaces before anything can reject it: an NBIRTH
  the node's session, a DBIRTH its device's aliases, even when the birth is
  undecodable, too large, or rejected for its content or timestamp (a bad
  topic excepted: it names no node). Data after a birth we could not read
  is then unknown and asks for a rebirth, never decoded with the old
  aliases. The birth itself asks for none: the next DATA does, rate-limited.
- A payload over `max_payload_bytes` is rejected ("too_large") undecoded (the
  intake leaves the size of Sparkplug messages to the host). Its seq is not
  read, so the node's next message shows a gap.
- An event larger than `max_event_bytes` as protobuf (it must fit a Publish
  batch) rejects the message ("too_large"); a birth so rejected still
  records its session (it was read whole), so the node's later DATA decodes.

Pure: no transport library (the pure-rules import-linter contract).
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import DecodeError

from edgesense.common.message_limits import MAX_EVENT_BYTES
from edgesense.common.sparkplug_names import (
    BD_SEQ,
    BD_SEQ_MODULUS,
    DEVICE_CONTROL,
    NODE_CONTROL,
    SEQ_MODULUS,
)
from edgesense.sparkplug import sparkplug_b_pb2 as spb
from edgesense.v1 import events_pb2
from edgesense_bridge.parsing import digest_event_id
from edgesense_bridge.sparkplug.control import rebirth_payload
from edgesense_bridge.sparkplug.topics import (
    COMMAND_TYPES,
    SparkplugTopic,
    StateTopic,
    ncmd_topic,
    parse_topic,
)
from edgesense_bridge.sparkplug.values import MAX_DATETIME_MS, LeftOut, metric_value
from edgesense_bridge.topics import TopicError

REBIRTHS_PER_SECOND: Final = 100.0
BD_SEQ_MEMORY: Final = 10_000  # nodes whose last bdSeq is remembered beyond their session
# What a session holds, in bytes: a little over what tracemalloc measured on
# CPython 3.11 (about 580 per node session with its key and LRU entry, 310
# per device with its id, and 120-170 per aliased metric for its two entries,
# the name's characters apart).
NODE_BYTES: Final = 600
DEVICE_BYTES: Final = 300
ENTRY_BYTES: Final = 100
SOURCE: Final = "sparkplug"


@dataclass(frozen=True)
class Rebirth:
    """Ask an edge node to publish its births again: publish `payload` (an NCMD
    with `Node Control/Rebirth` = true) to `topic`, QoS 0, not retained."""

    group_id: str
    edge_node_id: str
    topic: str
    payload: bytes
    reason: str  # why: "unknown_node", "unknown_alias", "seq_gap", ...


@dataclass(frozen=True)
class SparkplugOutcome:
    """What one Sparkplug message comes to.

    - `events`: to store, in this order (each with a deterministic event id,
      so that the same message seen twice, or by two bridges, is stored once);
      the message is acknowledged once all of them are confirmed. Empty: ack now.
    - `rejected`: (reason, detail) when the message is malformed or cannot be
      decoded without guessing (counted by reason, logged throttled, acked).
    - `ignored`: a reason when the message is no event and nothing is wrong
      (NCMD/DCMD, STATE, a stale NDEATH...), counted, acked.
    - `rebirth`: an NCMD to publish (already rate-limited per edge node).
    - `metrics_left_out`: metrics not typed into the payload (datasets,
      templates, ...) by reason -> count; counted, not fatal.
    - `seq_gap`: the message's seq was not the session's last + 1 (mod 256):
      messages were lost between the node and us; counted. The session is
      dropped and the message rejected ("sparkplug_seq_gap"), but for a
      DDEATH, which still takes its device offline.
    - `sizes`: each event's serialized bytes, measured once (the size limit
      here, the Publish batch's in the intake), in `events`' order.
    """

    events: tuple[events_pb2.Event, ...] = ()
    rejected: tuple[str, str] | None = None
    ignored: str | None = None
    rebirth: Rebirth | None = None
    metrics_left_out: Mapping[str, int] = field(default_factory=dict)
    seq_gap: bool = False
    sizes: tuple[int, ...] = ()


def _text_bytes(text: str) -> int:
    # UTF-8 takes at least the bytes per character a Python str stores (1, 2 or 4).
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass
class _Catalogue:
    """What one BIRTH declared: alias -> name, name -> datatype."""

    names: dict[int, str]
    datatypes: dict[str, int]
    memory_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        entries = self.names.values(), self.datatypes.keys()
        self.memory_bytes = sum(
            ENTRY_BYTES + _text_bytes(name) for names in entries for name in names
        )


@dataclass
class _NodeSession:
    key: tuple[str, str]
    identity: bytes  # a digest of the NBIRTH that began it, in its events' ids
    bd_seq: int | None
    seq: int
    metrics: _Catalogue
    devices: dict[str, _Catalogue] = field(default_factory=dict)
    memory_bytes: int = field(init=False)  # kept up to date as devices come and go
    counted: int = 0  # what the host's total has for it

    def __post_init__(self) -> None:
        group, edge_node = self.key
        self.memory_bytes = (
            NODE_BYTES + _text_bytes(group) + _text_bytes(edge_node) + self.metrics.memory_bytes
        )

    def add_device(self, device_id: str, catalogue: _Catalogue) -> None:
        self.remove_device(device_id)
        self.devices[device_id] = catalogue
        self.memory_bytes += DEVICE_BYTES + _text_bytes(device_id) + catalogue.memory_bytes

    def remove_device(self, device_id: str) -> bool:
        catalogue = self.devices.pop(device_id, None)
        if catalogue is None:
            return False
        self.memory_bytes -= DEVICE_BYTES + _text_bytes(device_id) + catalogue.memory_bytes
        return True


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Birth:
    catalogue: _Catalogue
    values: dict[str, Any]
    bd_seq: int | None


@dataclass
class _Message:
    """One message being handled, and what it has come to so far."""

    address: SparkplugTopic
    topic: str
    raw: bytes
    payload: spb.Payload
    received_ns: int
    now: float
    events: list[events_pb2.Event] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)
    seq_gap: bool = False
    rebirth_reason: str | None = None
    session: bytes = b""  # the identity of the session the message belongs to, if any

    @property
    def key(self) -> tuple[str, str]:
        return (self.address.group_id, self.address.edge_node_id)

    @property
    def device_id(self) -> str:
        return self.address.device_id or self.address.edge_node_id


def event_id(
    project_id: str, topic: str, payload: bytes, kind: str, device_id: str, session: bytes = b""
) -> str:
    """The id of a message's `kind` event ("status", "readings") about `device_id`:
    the same message in the same session (its NBIRTH's digest), the same ids."""
    parts: tuple[bytes, ...] = (
        project_id.encode(),
        topic.encode(),
        payload,
        kind.encode(),
        device_id.encode(),
    )
    if session:
        parts += (session,)
    return digest_event_id(*parts)


class SparkplugHost:
    """The state of every edge node seen; feed it each Sparkplug message in
    arrival order."""

    def __init__(
        self,
        groups: Mapping[str, str] | None = None,  # group_id -> project id; default: the same
        *,
        rebirth_interval_seconds: float = 5.0,
        max_nodes: int = 10_000,
        max_event_bytes: int | None = None,
        max_memory_bytes: int = 256 * 2**20,
        max_devices_per_node: int = 10_000,
        max_payload_bytes: int = 256 * 1024,
    ) -> None:
        self._groups = dict(groups or {})
        self._rebirth_interval = rebirth_interval_seconds
        self._max_nodes = max_nodes
        self._max_event_bytes = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        self._max_memory = max_memory_bytes
        # One node's share: it cannot evict more than an eighth of the others.
        self._max_node_memory = max_memory_bytes // 8
        self._max_devices = max_devices_per_node
        self._max_payload_bytes = max_payload_bytes
        self._nodes: OrderedDict[tuple[str, str], _NodeSession] = OrderedDict()
        self._memory = 0
        # (group, edge node) -> when its last rebirth was requested, oldest first.
        self._last_rebirth: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._tokens = REBIRTHS_PER_SECOND
        # (group, edge node) -> the bdSeq of its last NBIRTH or NDEATH, least recent first.
        self._bd_seqs: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._tokens_at: float | None = None
        self._handlers: dict[str, Callable[[_Message], str | None]] = {
            "NBIRTH": self._nbirth,
            "DBIRTH": self._dbirth,
            "NDATA": self._data,
            "DDATA": self._data,
            "NDEATH": self._ndeath,
            "DDEATH": self._ddeath,
        }

    @property
    def node_count(self) -> int:
        return len(self._nodes)

    @property
    def memory_bytes(self) -> int:
        """What the sessions hold, as estimated (what max_memory_bytes bounds)."""
        return self._memory

    def handle(self, topic: str, payload: bytes, received_ns: int, now: float) -> SparkplugOutcome:
        """`topic` is under spBv1.0/; `received_ns` the bridge's receipt time
        (time.time_ns()), `now` a monotonic clock for rate limits."""
        try:
            address = parse_topic(topic, self._groups)
        except TopicError as exc:
            return SparkplugOutcome(rejected=(exc.reason, exc.detail))
        if isinstance(address, StateTopic):
            return SparkplugOutcome(ignored="state")
        if address.message_type in COMMAND_TYPES:
            return SparkplugOutcome(ignored="command")
        # A birth voids what it replaces before anything can reject it: the
        # old aliases must not decode the data that follows a birth we could
        # not read (no rebirth is asked here: the next DATA asks one).
        if address.message_type == "NBIRTH":
            self._drop((address.group_id, address.edge_node_id))
        elif address.message_type == "DBIRTH" and address.device_id is not None:
            self._drop_device((address.group_id, address.edge_node_id), address.device_id)
        if len(payload) > self._max_payload_bytes:
            detail = f"payload of {len(payload)} bytes exceeds {self._max_payload_bytes}"
            return SparkplugOutcome(rejected=("too_large", detail))
        try:
            decoded = spb.Payload.FromString(payload)
        except DecodeError as exc:
            detail = f"payload is not a Sparkplug B payload: {exc}"
            return SparkplugOutcome(rejected=("sparkplug_bad_payload", detail))
        message = _Message(address, topic, payload, decoded, received_ns, now)
        rejected: tuple[str, str] | None = None
        ignored: str | None = None
        try:
            ignored = self._handlers[address.message_type](message)
        except _Reject as exc:
            rejected = (exc.reason, exc.detail)
        sizes: tuple[int, ...] = ()
        if rejected is None:
            sizes = tuple(event.ByteSize() for event in message.events)
            for size in sizes:
                if size > self._max_event_bytes:
                    detail = f"event of {size} bytes as protobuf exceeds {self._max_event_bytes}"
                    rejected = ("too_large", detail)
                    break
        rebirth = None
        if message.rebirth_reason is not None:
            rebirth = self._rebirth(message, message.rebirth_reason)
        return SparkplugOutcome(
            events=() if rejected else tuple(message.events),
            rejected=rejected,
            ignored=ignored,
            rebirth=rebirth,
            # A rejected message makes no event for its metrics to be left out of.
            metrics_left_out={} if rejected else dict(message.left_out),
            seq_gap=message.seq_gap,
            sizes=() if rejected else sizes,
        )

    # Message types. Each adds its events to the message and answers an
    # ignored reason, or raises _Reject.

    def _nbirth(self, message: _Message) -> str | None:
        # handle() has dropped the old session: a rejected birth leaves none.
        birth = _read_birth(message, NODE_CONTROL)
        timestamp = _payload_timestamp(message)
        payload = message.payload
        seq = payload.seq % SEQ_MODULUS if payload.HasField("seq") else 0
        identity = hashlib.sha256(message.raw).digest()[:16]
        session = _NodeSession(message.key, identity, birth.bd_seq, seq, birth.catalogue)
        self._store(message.key, session)
        # The rebirth asked for (if any) has come: a gap found in the new
        # session asks again at once, not after the interval.
        self._last_rebirth.pop(message.key, None)
        if birth.bd_seq is not None:
            self._remember_bd_seq(message.key, birth.bd_seq)
        details: dict[str, Any] = {"source": SOURCE}
        if birth.bd_seq is not None:
            details["bdSeq"] = birth.bd_seq
        _status(message, message.device_id, online=True, details=details, timestamp=timestamp)
        if birth.values:
            _readings(message, birth.values, timestamp)
        return None

    def _dbirth(self, message: _Message) -> str | None:
        # handle() has dropped the device's previous aliases.
        session = self._session(message)
        device = message.device_id
        birth = _read_birth(message, DEVICE_CONTROL)
        timestamp = _payload_timestamp(message)
        if len(session.devices) >= self._max_devices:
            raise _Reject(
                "too_large",
                f"edge node {message.address.edge_node_id!r} has {len(session.devices)} "
                f"devices, max_devices_per_node {self._max_devices}",
            )
        session.add_device(device, birth.catalogue)
        self._reweigh(message.key)
        _status(message, device, online=True, details={"source": SOURCE}, timestamp=timestamp)
        if birth.values:
            _readings(message, birth.values, timestamp)
        return None

    def _data(self, message: _Message) -> str | None:
        session = self._session(message)
        if message.address.device_id is None:
            catalogue, control = session.metrics, NODE_CONTROL
        else:
            device = session.devices.get(message.address.device_id)
            if device is None:
                message.rebirth_reason = "unknown_device"
                raise _Reject(
                    "sparkplug_unknown_device",
                    f"device {message.address.device_id!r} of edge node "
                    f"{message.address.edge_node_id!r} has had no DBIRTH in this session",
                )
            catalogue, control = device, DEVICE_CONTROL
        values = _read_data(message, catalogue, control)
        if not values:
            return "no_metrics"
        _readings(message, values, _payload_timestamp(message))
        return None

    def _ndeath(self, message: _Message) -> str | None:
        bd_seq = _bd_seq(message.payload)
        session = self._nodes.get(message.key)
        if session is not None:
            last = session.bd_seq
            if last is not None and bd_seq is None:
                return "stale_ndeath"
        else:
            last = self._bd_seqs.get(message.key)
        if last is not None and bd_seq is not None:
            if 0 < (last - bd_seq) % BD_SEQ_MODULUS < BD_SEQ_MODULUS // 2:
                return "stale_ndeath"
            self._remember_bd_seq(message.key, bd_seq)
        self._drop(message.key)
        received = _timestamp_ns(message.received_ns)
        details: dict[str, Any] = {"source": SOURCE}
        if bd_seq is not None:
            details["bdSeq"] = bd_seq
        _status(message, message.device_id, online=False, details=details, timestamp=received)
        for device in sorted(session.devices if session else ()):
            _status(message, device, online=False, details={"source": SOURCE}, timestamp=received)
        return None

    def _ddeath(self, message: _Message) -> str | None:
        session = self._nodes.get(message.key)
        if session is not None:
            self._nodes.move_to_end(message.key)
            message.session = session.identity
            if _seq_gap(message, session) is None:
                self._drop_device(message.key, message.device_id)
            else:
                # The device goes offline all the same: a DDEATH names no alias.
                self._drop(message.key)
        timestamp = _payload_timestamp(message)
        _status(
            message,
            message.device_id,
            online=False,
            details={"source": SOURCE},
            timestamp=timestamp,
        )
        return None

    # Sessions.

    def _session(self, message: _Message) -> _NodeSession:
        """The message's node session, its seq checked; raises _Reject without one."""
        session = self._nodes.get(message.key)
        if session is None:
            message.rebirth_reason = "unknown_node"
            raise _Reject(
                "sparkplug_unknown_node",
                f"edge node {message.address.edge_node_id!r} of group "
                f"{message.address.group_id!r} has had no NBIRTH in this session",
            )
        self._nodes.move_to_end(message.key)
        message.session = session.identity
        gap = _seq_gap(message, session)
        if gap is not None:
            self._drop(message.key)
            raise _Reject("sparkplug_seq_gap", gap)
        return session

    def _store(self, key: tuple[str, str], session: _NodeSession) -> None:
        if session.memory_bytes > self._max_node_memory:
            raise _Reject("too_large", self._over_node_bound(session))
        self._nodes[key] = session
        session.counted = session.memory_bytes
        self._memory += session.counted
        self._evict(key)

    def _over_node_bound(self, session: _NodeSession) -> str:
        return (
            f"the edge node's births take {session.memory_bytes} bytes, over "
            f"{self._max_node_memory} (an eighth of max_memory_bytes {self._max_memory})"
        )

    def _drop(self, key: tuple[str, str]) -> None:
        session = self._nodes.pop(key, None)
        if session is not None:
            self._memory -= session.counted

    def _drop_device(self, key: tuple[str, str], device_id: str) -> None:
        session = self._nodes.get(key)
        if session is not None and session.remove_device(device_id):
            self._recount(session)

    def _recount(self, session: _NodeSession) -> None:
        self._memory += session.memory_bytes - session.counted
        session.counted = session.memory_bytes

    def _reweigh(self, key: tuple[str, str]) -> None:
        """Account for a session whose devices changed: a DBIRTH may evict other
        nodes, and drops and rejects a node whose births pass its share."""
        session = self._nodes[key]
        self._recount(session)
        if session.memory_bytes > self._max_node_memory:
            self._drop(key)
            raise _Reject("too_large", self._over_node_bound(session))
        self._evict(key)

    def _evict(self, keep: tuple[str, str]) -> None:
        while len(self._nodes) > self._max_nodes or self._memory > self._max_memory:
            oldest = next(iter(self._nodes))
            if oldest == keep:
                break
            self._drop(oldest)

    def _remember_bd_seq(self, key: tuple[str, str], bd_seq: int) -> None:
        self._bd_seqs[key] = bd_seq
        self._bd_seqs.move_to_end(key)
        if len(self._bd_seqs) > BD_SEQ_MEMORY:
            self._bd_seqs.popitem(last=False)

    # Rebirth requests.

    def _rebirth(self, message: _Message, reason: str) -> Rebirth | None:
        now, key = message.now, message.key
        while self._last_rebirth:
            first_key, first_at = next(iter(self._last_rebirth.items()))
            if now - first_at < self._rebirth_interval:
                break
            del self._last_rebirth[first_key]
        if key in self._last_rebirth:
            return None
        if self._tokens_at is not None:
            elapsed = max(0.0, now - self._tokens_at)
            self._tokens = min(REBIRTHS_PER_SECOND, self._tokens + elapsed * REBIRTHS_PER_SECOND)
        self._tokens_at = now
        if self._tokens < 1.0:
            return None
        self._tokens -= 1.0
        self._last_rebirth[key] = now
        group, edge_node = key
        return Rebirth(
            group_id=group,
            edge_node_id=edge_node,
            topic=ncmd_topic(group, edge_node),
            payload=rebirth_payload(message.received_ns // 1_000_000),
            reason=reason,
        )


# Reading payloads.


def _seq_gap(message: _Message, session: _NodeSession) -> str | None:
    """None when the message's seq is the session's next (and advances it); else
    what the gap is, the message flagged and a rebirth asked for: the caller
    drops the session."""
    expected = (session.seq + 1) % SEQ_MODULUS
    payload = message.payload
    if payload.HasField("seq") and payload.seq == expected:
        session.seq = expected
        return None
    message.seq_gap = True
    message.rebirth_reason = message.rebirth_reason or "seq_gap"
    seen = f"seq {payload.seq}" if payload.HasField("seq") else "no seq"
    return (
        f"{seen} where {expected} was next: messages were lost, perhaps a birth; "
        "waiting for the rebirth"
    )


def _name(metric: spb.Payload.Metric) -> str | None:
    return metric.name if metric.HasField("name") and metric.name else None


def _bd_seq(payload: spb.Payload) -> int | None:
    for metric in payload.metrics:
        if _name(metric) == BD_SEQ:
            return _raw_integer(metric)
    return None


def _raw_integer(metric: spb.Payload.Metric) -> int | None:
    which = metric.WhichOneof("value")
    if which == "int_value":
        return metric.int_value
    if which == "long_value":
        return metric.long_value
    return None


def _read_birth(message: _Message, control: str) -> _Birth:
    names: dict[int, str] = {}
    datatypes: dict[str, int] = {}
    values: dict[str, Any] = {}
    bd_seq: int | None = None
    for metric in message.payload.metrics:
        name = _name(metric)
        if name is None:
            message.left_out["no_name"] += 1
            continue
        if metric.HasField("alias"):
            known = names.get(metric.alias)
            if known is not None and known != name:
                raise _Reject(
                    "sparkplug_bad_birth",
                    f"alias {metric.alias} names both {known[:80]!r} and {name[:80]!r}",
                )
            names[metric.alias] = name
        datatypes[name] = metric.datatype
        if name == BD_SEQ and control == NODE_CONTROL:
            bd_seq = _raw_integer(metric)
            continue
        if name.startswith(control):
            continue
        _add_value(message, values, name, metric, metric.datatype)
    return _Birth(_Catalogue(names, datatypes), values, bd_seq)


def _read_data(message: _Message, catalogue: _Catalogue, control: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for metric in message.payload.metrics:
        name = _name(metric)
        if name is None and metric.HasField("alias"):
            name = catalogue.names.get(metric.alias)
            if name is None:
                message.rebirth_reason = "unknown_alias"
                where = message.address.device_id or message.address.edge_node_id
                raise _Reject(
                    "sparkplug_unknown_alias",
                    f"alias {metric.alias} is not in the birth of {where!r}",
                )
        if name is None:
            message.left_out["no_name"] += 1
            continue
        if name.startswith(control):
            continue
        datatype = metric.datatype if metric.datatype else catalogue.datatypes.get(name, 0)
        _add_value(message, values, name, metric, datatype)
    return values


def _add_value(
    message: _Message,
    values: dict[str, Any],
    name: str,
    metric: spb.Payload.Metric,
    datatype: int,
) -> None:
    if metric.is_historical:
        message.left_out["historical"] += 1
        return
    value = metric_value(metric, datatype)
    if isinstance(value, LeftOut):
        message.left_out[value.reason] += 1
        return
    if name in values:
        message.left_out["duplicate"] += 1
    values[name] = value


# Making events.


def _timestamp_ns(nanoseconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(nanoseconds)
    return stamp


def _payload_timestamp(message: _Message) -> timestamp_pb2.Timestamp:
    """The payload's timestamp, else the receipt time."""
    payload = message.payload
    if not payload.HasField("timestamp"):
        return _timestamp_ns(message.received_ns)
    if payload.timestamp > MAX_DATETIME_MS:
        raise _Reject(
            "sparkplug_bad_timestamp",
            f"payload timestamp {payload.timestamp} ms is past 9999-12-31T23:59:59.999Z",
        )
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(payload.timestamp)
    return stamp


def _event(
    message: _Message, kind: str, device_id: str, timestamp: timestamp_pb2.Timestamp
) -> events_pb2.Event:
    address = message.address
    event = events_pb2.Event(
        event_id=event_id(
            address.project_id, message.topic, message.raw, kind, device_id, message.session
        ),
        project_id=address.project_id,
        gateway_id=address.edge_node_id,
        device_id=device_id,
        timestamp=timestamp,
        received_at=_timestamp_ns(message.received_ns),
    )
    message.events.append(event)
    return event


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _status(
    message: _Message,
    device_id: str,
    *,
    online: bool,
    details: Mapping[str, Any],
    timestamp: timestamp_pb2.Timestamp,
) -> None:
    state = (
        events_pb2.DeviceStatus.STATE_ONLINE if online else events_pb2.DeviceStatus.STATE_OFFLINE
    )
    event = _event(message, "status", device_id, timestamp)
    event.status.CopyFrom(events_pb2.DeviceStatus(state=state, details=_struct(details)))


def _readings(
    message: _Message, values: Mapping[str, Any], timestamp: timestamp_pb2.Timestamp
) -> None:
    event = _event(message, "readings", message.device_id, timestamp)
    event.readings.CopyFrom(events_pb2.Readings(values=_struct(values)))
