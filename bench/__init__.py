"""End-to-end benchmarks of EdgeSense beside a minimal forwarder (issue 6).

Every piece runs as its own process on loopback: a private Mosquitto
(`mosquitto`), gateways publishing QoS 1 (`publisher`), webhook receivers that
verify signatures and time arrivals (`receiver`), and either the EdgeSense
cluster (`cluster`) or the baseline forwarder (`baseline`). `run` is the
orchestrator and command line; `scenarios` holds the measurements, `procstats`
reads CPU and memory from /proc, and `report` prints the table and writes JSON.

    python -m bench.run [--postgres] [--quick] [--scenarios a,b] [--json out.json]
"""
