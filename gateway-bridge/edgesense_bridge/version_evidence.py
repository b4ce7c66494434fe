"""When the bridge may conclude that its broker does not speak MQTT 5.

That conclusion ends the bridge (a configuration error, exit 2), so it must
not come from a broker that is only slow: an overloaded broker can miss the
CONNACK deadline and then the 2 s MQTT 5 probe while answering the quicker
3.1.1 one, and in Kubernetes a wrong exit 2 is a crash loop. So:

- an explicit wrong-version CONNACK (MQTT 5's 0x84, 3.1.1's 1) is proof;
- silence is proof only after `STRIKES` consecutive attempts, each of which
  found 3.1.1 answering while MQTT 5 did not (amqtt, which never answers an
  MQTT 5 CONNECT, is still told apart, in a few more seconds);
- nothing is proof once this process has been connected with MQTT 5: that
  broker speaks it, and whatever it does later is retried.
"""

from __future__ import annotations

STRIKES = 3


class VersionEvidence:
    """What one bridge process has seen of its broker's MQTT 5 support."""

    def __init__(self, strikes: int = STRIKES) -> None:
        self.strikes = strikes
        self.connected_once = False
        self._silent_in_a_row = 0

    def connected(self) -> None:
        self.connected_once = True
        self._silent_in_a_row = 0

    def may_conclude(self) -> bool:
        """False once connected with MQTT 5: no refusal is then worth probing for."""
        return not self.connected_once

    def wrong_version(self) -> bool:
        """An explicit wrong-version CONNACK: True when that ends the bridge."""
        return self.may_conclude()

    def unanswered(self, answers_311_only: bool) -> bool:
        """An MQTT 5 CONNECT got no CONNACK; True when enough such attempts show
        a broker that answers 3.1.1 only."""
        if not self.may_conclude() or not answers_311_only:
            self._silent_in_a_row = 0
            return False
        self._silent_in_a_row += 1
        return self._silent_in_a_row >= self.strikes

    def failed(self) -> None:
        """An attempt that failed otherwise (no TCP connection, a refusal): the run is over."""
        self._silent_in_a_row = 0
