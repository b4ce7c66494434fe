"""The MQTT gateway bridge: gateway topics in, typed events out to delivery."""
