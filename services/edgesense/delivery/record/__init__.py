"""Record: a delivery's state after it was stored: what an attempt's outcome
means (retry, fail, hold), writing outcomes back, following webhook changes,
and expiring what was held too long."""
