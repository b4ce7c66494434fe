"""Shared by every process: settings and their parsers, errors (and their gRPC
status in `grpc_status`), auth, the gRPC runtime, TLS, logging, ids, paging,
and the rules two services share (the retry backoff, the signature scheme).
Imports no service package (the import contracts in pyproject.toml, run by
`make check` and the tests, hold this)."""
