"""Generated from protos/edgesense/sparkplug; do not edit."""
