"""Claim: take due deliveries from the outbox into per-webhook lanes in memory,
and decide, fairly across projects and webhooks, which is sent next
(dispatcher.py does the I/O; lanes.py and fairness.py are the pure rules)."""
