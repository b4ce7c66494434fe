"""The committed generated code (edgesense/v1) matches protos/: `make protos` was run."""

from __future__ import annotations

from pathlib import Path

from edgesense import protogen

COMMITTED = protogen.REPO_ROOT / "services" / protogen.PACKAGE_DIR


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    fresh_dir = tmp_path / protogen.PACKAGE_DIR
    fresh = {p.name: p.read_bytes() for p in fresh_dir.iterdir() if p.is_file()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "run `make protos`: the file list differs"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make protos`: stale generated files {stale}"


def test_every_proto_is_generated() -> None:
    for proto in protogen.proto_files():
        stem = Path(proto).stem
        assert (COMMITTED / f"{stem}_pb2.py").exists()
        assert (COMMITTED / f"{stem}_pb2_grpc.py").exists()
