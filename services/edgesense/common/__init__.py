"""Shared by every process: settings, errors, auth, the gRPC runtime, TLS, logs,
ids, paging, and the rules two services share (the retry backoff, the
signature scheme). Imports no service package (`make check` holds this)."""
