"""The committed generated code (edgesense/v1, edgesense/sparkplug) matches
protos/: `make protos` was run."""

from __future__ import annotations

from pathlib import Path

from edgesense import protogen

SERVICES = protogen.REPO_ROOT / "services"
COMMITTED = SERVICES / protogen.PACKAGE_DIR


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    for package_dir in (protogen.PACKAGE_DIR, *protogen.MESSAGE_PACKAGE_DIRS):
        fresh_dir, committed_dir = tmp_path / package_dir, SERVICES / package_dir
        fresh = {p.name: p.read_bytes() for p in fresh_dir.iterdir() if p.is_file()}
        committed = {p.name: p.read_bytes() for p in committed_dir.iterdir() if p.is_file()}
        assert sorted(fresh) == sorted(committed), (
            f"run `make protos`: {package_dir}'s files differ"
        )
        stale = [name for name in fresh if fresh[name] != committed[name]]
        assert not stale, f"run `make protos`: stale generated files {stale} in {package_dir}"


def test_every_proto_is_generated() -> None:
    for proto in protogen.proto_files():
        stem = Path(proto).stem
        assert (COMMITTED / f"{stem}_pb2.py").exists()
        assert (COMMITTED / f"{stem}_pb2_grpc.py").exists()
