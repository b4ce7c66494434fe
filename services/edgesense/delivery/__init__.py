"""The delivery service: durable outbox, signed POSTs with retries, attempt log."""
