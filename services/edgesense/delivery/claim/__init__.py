"""Claim: take due deliveries from the outbox and decide, fairly across
projects and webhooks, which is sent next."""
