"""The devices view: every device and gateway seen, kept current from the stored events."""
