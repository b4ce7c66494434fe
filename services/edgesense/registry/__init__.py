"""The webhook registry service: webhooks, API keys and the disable policy."""
