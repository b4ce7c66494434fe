"""Generated from protos/edgesense/v1; do not edit."""
