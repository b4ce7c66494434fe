"""paho-mqtt's MQTT 5 properties of a received PUBLISH, read for a tenth of the CPU.

paho decodes every PUBLISH (`paho.mqtt._packet.decode_publish`) into a new
`Properties`, whose constructor builds its lookup tables again each time (a
list, two dicts of 27 entries and 27 `list.index` calls, each stored through
a `__setattr__` that checks the name against the table) and whose `unpack`
first clears it by testing all 27 names. That was 10.7 us of the 12.9 us
decode_publish took per message here, and 15% of the bridge's CPU at
saturation.

`SharedTableProperties` is the same class with the tables built once and
shared (paho never changes them), and `clear` deleting only what is set.
`install()` makes paho's packet decoders (`paho.mqtt._packet`, paho 2.2:
PUBLISH, and the rarer CONNACK, SUBACK, UNSUBACK, DISCONNECT and the
PUBACK/PUBREC/PUBREL/PUBCOMP with properties) build it; paho's own code does
everything else, and the properties it reads are the same
(tests/bridge/test_paho_properties.py compares them, and fails if paho moves
the decoder, so that an upgrade is looked at; the bridge then runs with
paho's own class). Properties built anywhere else (our own publications'
among them) are paho's own class.
"""

from __future__ import annotations

from typing import Any, Final

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# paho's instance attributes that are not properties.
_OWN: Final = frozenset({"packetType", "types", "names", "properties"})
# Built once, read by every instance.
_TABLES: Final[Any] = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


class SharedTableProperties(Properties):
    """paho's `Properties`, its lookup tables shared by every instance."""

    def __init__(self, packetType: int) -> None:  # paho's parameter name
        own: dict[str, Any] = self.__dict__
        own["packetType"] = packetType
        own["types"] = _TABLES.types
        own["names"] = _TABLES.names
        own["properties"] = _TABLES.properties

    def clear(self) -> None:
        for name in [name for name in self.__dict__ if name not in _OWN]:
            delattr(self, name)


def install() -> bool:
    """Make paho's packet decoders build `SharedTableProperties`; False (and
    paho left as it is) where they are not where paho 2.2 has them."""
    try:
        from paho.mqtt import _packet  # paho 2.2's private module
    except ImportError:
        return False
    found = getattr(_packet, "Properties", None)
    if found is not Properties and found is not SharedTableProperties:
        return False
    _packet.Properties = SharedTableProperties  # type: ignore[attr-defined]
    return True
