"""What each scenario runs: its phases (receivers, load, limits), small or full size.

`scenarios` runs them; `report` turns their results into figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bench.receivers import OTHER_PROJECT, EndpointSpec
from bench.rules import Rule, rule_mix
from bench.systems import SHARED_GROUP, Replicas

ISOLATION_LIMIT_SECONDS = 15.0
# The isolation ratio compares two short phases, and on a 2-core machine one
# phase's rate varies by several percent from run to run: the pair runs this
# many times (alone, beside, alone, ...) and the report takes medians.
ISOLATION_ROUNDS = 3
# Fair sharing between projects (issue 10): another project's webhooks to a
# receiver that never answers in time, and its events, published first.
OTHER_WEBHOOKS = 300
OTHER_EVENTS = 50
# Retention (issue 12): a steady load for several times the retention, with
# the database's size sampled every RETENTION_SAMPLE_SECONDS. Deletion starts
# once rows are older than the retention and runs every 10 s (every half
# retention when shorter), so the size should stop growing after about the
# retention plus one period; from then to the end it grows no more.
RETENTION_SECONDS = 20
RETENTION_RATE = 500.0
RETENTION_SAMPLE_SECONDS = 5.0
# When the size should have stopped growing: the first deletion comes at most
# one 10 s period (and a 2 s round of the maintenance loop) after the oldest
# rows pass the retention, and the size peaks just before the next one,
# another period later; 5 s of slack.
RETENTION_SETTLED_SECONDS = RETENTION_SECONDS + 25.0
# Ordered webhooks (issue 12): saturation's load to one webhook (the
# publisher's 100 devices), unordered and then ordered in the same run;
# EdgeSense only (the baseline has no such option).
ORDERED_UNORDERED, ORDERED = "ordered-unordered", "ordered"
# Alert rules (issue 13): saturation's load, without rules and then with the
# 100 of `bench.rules` active in the measured project, in the same run;
# EdgeSense only (the baseline has no rules).
RULES_WITHOUT, RULES = "rules-without", "rules"
# Sparkplug B (issue 15): saturation's load on our JSON topics, then the same
# number of readings from the same 100 devices as Sparkplug B DDATA by alias
# (the edge node's NBIRTH and DBIRTHs first, not measured), in the same run;
# EdgeSense only (the baseline speaks no Sparkplug).
SPARKPLUG_JSON, SPARKPLUG = "sparkplug-json", "sparkplug"
# Scale-out (issue 14): saturation's load on 1, 2 and 3 delivery processes
# and 1, 2 and 3 bridges (on a shared subscription in every layout, so that the
# broker's side is the same), each from a fresh start on PostgreSQL; the
# first also on the baseline, for scale. EdgeSense on PostgreSQL only, not
# run unless asked for (`--scale`): about four minutes.
SCALE = "scale"
SCALE_LAYOUTS = (
    Replicas(1, 1),
    Replicas(2, 1),
    Replicas(2, 2),
    Replicas(3, 2),
    Replicas(3, 3),
)
SCALE_SETTINGS = {"EDGESENSE_MQTT_SHARED_GROUP": SHARED_GROUP}


@dataclass(frozen=True)
class Phase:
    name: str
    endpoints: list[EndpointSpec]
    count: int
    rate: float = 0.0  # events/s; 0: as fast as the broker accepts
    backlog: bool = False
    limit_seconds: float = 600.0  # after the last publish, at most this long for the rest
    background: int = 0  # events published first to each other project (not measured)
    settings: dict[str, str] = field(default_factory=dict)  # EdgeSense's, beside the defaults
    systems: tuple[str, ...] = ()  # the systems it runs on; () for every one
    sample_database_seconds: float = 0.0  # > 0: the database's size every so many seconds
    settled_after_seconds: float = 0.0  # from when the sampled size should stay flat
    rules: tuple[Rule, ...] = ()  # alert rules created in the measured project first
    replicas: Replicas = field(default_factory=Replicas)  # EdgeSense's processes
    watch: bool = False  # follow how the work divides, and the database (`System.watch`)
    sparkplug: bool = False  # published as a Sparkplug B edge node (bench.publisher)

    @property
    def healthy(self) -> list[str]:
        return [e.name for e in self.endpoints if e.mode == "ok"]

    @property
    def projects(self) -> list[str]:
        return sorted({e.project for e in self.endpoints})


# On PostgreSQL the throughput phases are watched too: each prints, as the
# scale layouts do, what it cost the database per delivery (transactions,
# rows and WAL written, its backends' CPU; bench.clusterwatch), which the
# machine's `others` share only hints at.
WATCHED_ON_POSTGRES = ("saturation", "fanout")


def watched(phases: list[Phase], postgres: bool) -> list[Phase]:
    """`phases`, those named in WATCHED_ON_POSTGRES watched when on PostgreSQL."""
    if not postgres:
        return phases
    return [replace(p, watch=True) if p.name in WATCHED_ON_POSTGRES else p for p in phases]


def healthy(name: str) -> EndpointSpec:
    return EndpointSpec(name)


def scale_phase_name(replicas: Replicas) -> str:
    return f"{SCALE}-d{replicas.deliveries}-b{replicas.bridges}"


def scale_phases(count: int, layouts: tuple[Replicas, ...] = SCALE_LAYOUTS) -> list[Phase]:
    """The scale scenario: `count` events as fast as the broker accepts, one
    webhook, on each layout; the first layout on the baseline too."""
    return [
        Phase(
            scale_phase_name(replicas),
            [EndpointSpec("hook")],
            count,
            settings=SCALE_SETTINGS,
            systems=() if n == 0 else ("edgesense",),
            replicas=replicas,
            watch=True,
        )
        for n, replicas in enumerate(layouts)
    ]


def plan(quick: bool, isolation_rate: float = 0.0) -> dict[str, list[Phase]]:
    """Every scenario's phases, sized to keep a full run near ten minutes.

    Isolation runs at saturation unless `isolation_rate` (events/s) is given,
    in `ISOLATION_ROUNDS` rounds (one when quick);
    it waits at most `ISOLATION_LIMIT_SECONDS` after the last publish (a
    sender without isolation would take minutes), and the rate is over that
    window.
    """
    scale = 6 if quick else 1
    latency_seconds = 5 if quick else 20
    isolation = int(isolation_rate * latency_seconds) if isolation_rate else 10_000 // scale

    def saturation(
        name: str,
        *,
        ordered: bool = False,
        rules: tuple[Rule, ...] = (),
        ours: bool = False,
        sparkplug: bool = False,
    ) -> Phase:
        """Saturation's load (one webhook, as fast as the broker accepts), which
        the ordered, rules and sparkplug scenarios compare against; `ours`:
        EdgeSense only; `sparkplug`: as Sparkplug B DDATA."""
        hook = EndpointSpec("hook", ordered=ordered)
        systems = ("edgesense",) if ours else ()
        return Phase(
            name, [hook], 30_000 // scale, systems=systems, rules=rules, sparkplug=sparkplug
        )

    beside = [healthy("healthy"), EndpointSpec("failing", "fail"), EndpointSpec("hanging", "hang")]
    other = EndpointSpec("other", "hang", project=OTHER_PROJECT, webhooks=OTHER_WEBHOOKS)
    limit = ISOLATION_LIMIT_SECONDS
    return {
        "saturation": [saturation("saturation")],
        "latency": [Phase("latency", [healthy("hook")], 500 * latency_seconds, rate=500)],
        "fanout": [Phase("fanout", [healthy(f"hook{i}") for i in range(10)], 3_000 // scale)],
        "isolation": [
            phase
            for round_ in range(1 if quick else ISOLATION_ROUNDS)
            for suffix in ["" if round_ == 0 else f"#{round_ + 1}"]
            for phase in (
                Phase(
                    f"isolation-alone{suffix}",
                    [healthy("healthy")],
                    isolation,
                    isolation_rate,
                    False,
                    limit,
                ),
                Phase(f"isolation-beside{suffix}", beside, isolation, isolation_rate, False, limit),
                Phase(
                    f"isolation-projects{suffix}",
                    [healthy("healthy"), other],
                    isolation,
                    isolation_rate,
                    False,
                    limit,
                    OTHER_EVENTS,
                ),
            )
        ],
        "backlog": [
            Phase("backlog", [healthy("hook")], 20_000 if quick else 200_000, backlog=True)
        ],
        "ordered": [
            saturation(ORDERED_UNORDERED, ours=True),
            saturation(ORDERED, ordered=True, ours=True),
        ],
        "rules": [
            saturation(RULES_WITHOUT, ours=True),
            saturation(RULES, rules=tuple(rule_mix()), ours=True),
        ],
        "sparkplug": [
            saturation(SPARKPLUG_JSON, ours=True),
            saturation(SPARKPLUG, ours=True, sparkplug=True),
        ],
        # EdgeSense only: the baseline stores nothing.
        "retention": [
            Phase(
                "retention",
                [healthy("hook")],
                int(RETENTION_RATE * (60 if quick else 100)),
                rate=RETENTION_RATE,
                settings={"EDGESENSE_RETENTION_DAYS": f"{RETENTION_SECONDS / 86400:.9f}"},
                systems=("edgesense",),
                sample_database_seconds=RETENTION_SAMPLE_SECONDS,
                settled_after_seconds=RETENTION_SETTLED_SECONDS,
            )
        ],
        # Not in a default run: see SCALE.
        SCALE: scale_phases(30_000 // scale),
    }
