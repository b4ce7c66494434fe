"""Sparkplug B names and numbers that both sides of the protocol use.

The bridge reads Sparkplug as a host application (edgesense_bridge.sparkplug)
and the simulator plays an edge node (edgesense.tools.sim_sparkplug); neither
may import the other (the services-apart contract), so the names they must
agree on live here, once: a typo in one copy would make the two disagree
silently, and every test between them would still pass against itself.

Pure constants: no transport library (the pure-rules import-linter contract).
"""

from __future__ import annotations

from typing import Final

NAMESPACE: Final = "spBv1.0"  # the first topic level of every Sparkplug B topic
BD_SEQ: Final = "bdSeq"  # the NBIRTH/NDEATH metric pairing a birth with its death
NODE_CONTROL: Final = "Node Control/"  # an edge node's protocol metrics, not readings
DEVICE_CONTROL: Final = "Device Control/"  # a device's protocol metrics, not readings
REBIRTH_METRIC: Final = NODE_CONTROL + "Rebirth"  # an NCMD's "publish your births again"
SEQ_MODULUS: Final = 256  # seq runs 0..255 and wraps
BD_SEQ_MODULUS: Final = 256  # bdSeq too (one more per MQTT connection)
