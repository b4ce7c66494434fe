"""What one chaos run does, read from the environment, and the figures it prints.

CHAOS_EVENTS (20000)   readings published
CHAOS_RATE (800)       readings a second, steady (`make chaos`: 400)
CHAOS_KILL_EVERY (3)   seconds between two kill -9s
CHAOS_SEED (random)    seeds the victims and the receiver's failures; printed, to replay a run

`make test` runs the defaults: the issue's 20,000 readings in 25 s, so that
the test takes well under a minute. `make chaos` runs the same test for
longer, at 400/s, and with whatever CHAOS_* it is given (README, "Chaos").
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

# The receiver: 3 % of requests answered 500, 1 % held 2 s (twice delivery's timeout).
ERROR_RATE = 0.03
HANG_RATE = 0.01
HANG_SECONDS = 2.0
LEASE_SECONDS = 5.0
RESTART_AFTER_SECONDS = 1.0
POSTGRES_DOWN_SECONDS = 2.0
MOSQUITTO_DOWN_SECONDS = 1.0
# When, as a share of the publishing time, the database and the broker restart.
POSTGRES_AT = 0.35
MOSQUITTO_AT = 0.65
# How the services say the database is down (edgesense.storage.engine.translate):
# a connection lost, or none to be made.
DATABASE_DOWN = ("database unavailable", "database unreachable")


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 20_000
    rate: float = 800.0
    kill_every: float = 3.0
    seed: int = field(default_factory=lambda: secrets.randbelow(2**31))

    def __post_init__(self) -> None:
        if self.events < 1 or self.rate <= 0 or self.kill_every <= 0:
            raise ValueError(f"a chaos run needs events, a rate and a kill period: {self}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ChaosPlan:
        values: dict[str, float | int] = {}
        for name, key, kind in (
            ("CHAOS_EVENTS", "events", int),
            ("CHAOS_RATE", "rate", float),
            ("CHAOS_KILL_EVERY", "kill_every", float),
            ("CHAOS_SEED", "seed", int),
        ):
            if env.get(name):
                values[key] = kind(env[name])
        return cls(**values)  # type: ignore[arg-type]

    @property
    def publish_seconds(self) -> float:
        return self.events / self.rate

    @property
    def drain_seconds(self) -> float:
        """After the last publish: time for every reading to arrive (the
        backlog the outages left, retries, leases of killed processes)."""
        return 60.0 + self.publish_seconds / 2

    @property
    def timeout_seconds(self) -> float:
        """The whole test's limit: start-up, publishing, draining, checks."""
        return 60.0 + self.publish_seconds + self.drain_seconds


@dataclass
class Figures:
    """What a run printed; `lost`, `stuck` and `needed_a_hand` must be zero."""

    plan: ChaosPlan
    published: int = 0  # PUBACK Success
    no_subscribers: int = 0  # PUBACK 0x10, published again
    refused: int = 0  # PUBACK with a failure reason
    received: int = 0  # readings answered 200 at least once
    lost: int = 0  # published, never received
    duplicate_requests: int = 0  # 200s beyond the first of a reading, same webhook-id
    duplicated_readings: int = 0
    readings_with_two_ids: int = 0
    receiver_errors: int = 0
    receiver_hangs: int = 0
    bad_signatures: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    failed_starts: int = 0
    idle_turns: int = 0
    outages: list[str] = field(default_factory=list)
    outage_reports: int = 0  # log lines saying the database was down
    outbox: dict[str, int] = field(default_factory=dict)
    needed_a_hand: list[str] = field(default_factory=list)  # exited unkilled, or not running
    publish_seconds: float = 0.0
    drain_seconds: float = 0.0  # last publish to last reading received
    total_seconds: float = 0.0

    def lines(self) -> list[str]:
        p = self.plan
        kills = ", ".join(f"{name} {n}" for name, n in sorted(self.kills.items()))
        return [
            f"chaos: {p.events} readings at {p.rate:g}/s, kill -9 every {p.kill_every:g} s, "
            f"seed {p.seed} (CHAOS_SEED={p.seed} replays the choices)",
            f"  published with PUBACK   {self.published} in {self.publish_seconds:.1f} s "
            f"({self.no_subscribers} answered 'no matching subscribers' first, published "
            f"again; {self.refused} refused)",
            f"  received unique         {self.received}",
            f"  lost                    {self.lost}",
            f"  duplicates              {self.duplicate_requests} requests for "
            f"{self.duplicated_readings} readings, each under its first webhook-id "
            f"({self.readings_with_two_ids} readings under two ids)",
            f"  receiver                {self.receiver_errors} answered 500, "
            f"{self.receiver_hangs} hung {HANG_SECONDS:g} s, "
            f"{self.bad_signatures} bad signatures",
            f"  kill -9                 {sum(self.kills.values())} ({kills}); "
            f"{self.idle_turns} turns found all four restarting; "
            f"{self.failed_starts} restarts exited while starting and were tried again",
            *(f"  restart                 {outage}" for outage in self.outages),
            f"  reported                {' or '.join(map(repr, DATABASE_DOWN))} in"
            f" {self.outage_reports} log lines "
            "(Publish answered UNAVAILABLE, outcomes not recorded)",
            f"  outbox                  {self.outbox_text()}",
            f"  needed a hand           {len(self.needed_a_hand)} "
            f"{self.needed_a_hand if self.needed_a_hand else ''}".rstrip(),
            f"  time                    publish {self.publish_seconds:.1f} s, then "
            f"{self.drain_seconds:.1f} s until the last reading arrived; "
            f"{self.total_seconds:.1f} s in all",
        ]

    def outbox_text(self) -> str:
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.outbox.items()) if k != "stuck")
        return f"{states}; stuck pending past their lease: {self.outbox.get('stuck', 0)}"
