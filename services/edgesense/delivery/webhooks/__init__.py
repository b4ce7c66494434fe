"""The webhooks delivery knows about: an in-memory index kept current from the registry's stream."""
