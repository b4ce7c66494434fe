"""Deployment artefacts generated from the protos (the production Envoy config)."""
