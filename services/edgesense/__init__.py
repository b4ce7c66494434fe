"""EdgeSense webhooks: MQTT gateway events delivered as signed, retried HTTP POSTs."""

__version__ = "0.1.0"
