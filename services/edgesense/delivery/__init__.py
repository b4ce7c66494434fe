"""The delivery service: durable outbox, signed POSTs with retries, attempt log.

The path of a delivery, folder by folder (each folder's __init__ says more):

    Publish (from the bridge) -> accept -> store -> claim -> send -> record -> store

webhooks/ holds the webhooks, fed by the registry: accept matches events
against it, claim looks up where to send, record disables a webhook whose
delivery failed for good (and tells the registry).

accept/   acceptor.py: Publish batches become events and one delivery per
          matching webhook, group-committed in one transaction; a delivery
          whose lane has room is stored leased to this process and handed
          straight to the dispatcher (no claim needed); samples.py: the
          sample events of test sends and their limit per webhook (pure).
store/    outbox.py: the `Outbox` interface and `open_outbox`, which picks
          outbox_sqlite.py (every write on one writer thread) or
          outbox_postgres.py (SQLAlchemy over asyncpg, SKIP LOCKED claims);
          reads.py: counts, listings and stats, the same on both; rows.py: the
          row types, statuses and statements every step shares (pure; every
          module imports them from there); tables.py: the schema;
          online_indexes.py: indexes PostgreSQL builds concurrently.
claim/    dispatcher.py: the claim loop and the attempt tasks (asyncio, I/O);
          lanes.py: what waits in memory and what the next claim may take
          (pure; its invariants are written there); fairness.py: which lane
          gets the next send slot (pure); breaker.py: pauses a failing webhook;
          ratelimit.py: a webhook's rateLimitPerSecond (pure).
send/     payload.py renders the JSON body once per event (the dispatcher
          signs it with edgesense.common.signing; GetDelivery shows it
          rendered by the same code); http_sender.py POSTs it
          (one POST = one attempt); attempt.py: how a POST ended and the
          `Sender` interface (pure); senders.py and sender_process.py run
          those POSTs in child processes (none with
          EDGESENSE_DELIVERY_SENDERS=0), sender_wire.py is their framing.
record/   writer.py: outcomes batched and written back, failures reported;
          policy.py: whether a claimed delivery is sent, and what an
          outcome means (retry, fail, hold; pure);
          reconciler.py: delivery states follow webhook states (disabled,
          enabled, deleted, exhausted); maintenance.py: counts and expiry.
webhooks/ index.py: the webhooks in memory, matched per event; registry_link.py:
          the registry's change stream into the index, and failure reports.
rules/    threshold alert rules: index.py, the rules in memory by project,
          watched member and device (pure); alerts.py, what judging a batch's
          readings writes (states, alerts, device.alert events and their
          deliveries; pure, run by the outbox inside the batch's transaction;
          the rules themselves are edgesense.common.thresholds); link.py, the
          registry's rule stream into the index, and the alerts of disabled,
          deleted or changed rules resolved (AlertEndings).
devices/  the devices view (GET /api/devices): view.py, what a device's events
          say about it and how two states of a device merge (pure);
          tracker.py, events noted after each accept commit and flushed about
          once a second; service.py, the Devices gRPC servicer. Its table is
          store/devices.py.

Around them: service.py is the gRPC servicer (Publish, ListDeliveries,
GetDelivery, Redeliver, SendTestEvent, RecoverDeliveries, GetWebhookStats,
GetProjectStats, ListAlerts; devices/service.py serves Devices beside it); server.py
wires everything and says what starts and stops in which order; metrics.py
names the Prometheus metrics.
"""
