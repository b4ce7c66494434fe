"""Store: the durable outbox (events, deliveries, attempts) on SQLite or PostgreSQL."""
