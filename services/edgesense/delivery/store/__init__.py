"""Store: the durable outbox (events, deliveries, attempts) on SQLite or PostgreSQL.

`outbox` is the interface and chooses the implementation (`outbox_sqlite`,
`outbox_postgres`); both read through `reads`; `rows` holds the rows and the
per-delivery statements (stdlib only), `tables` the schema.
"""
