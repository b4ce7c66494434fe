"""Generates the Python code for `protos/` (the `make protos` target).

The output (`edgesense/v1/*_pb2.py`, `*_pb2_grpc.py` and typed `.pyi` stubs
from mypy-protobuf; `edgesense/sparkplug/*_pb2.py` and stubs for the
Sparkplug B schema, messages only) is committed and never edited by hand;
`tests/test_protos_fresh.py` regenerates it into a temporary folder and fails
when the committed copy is stale. The same run writes the descriptor set that
Envoy's gRPC-JSON transcoder and the OpenAPI generator read.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
PACKAGE_DIR = "edgesense/v1"
# Message-only packages: no services, not in the descriptor set (Envoy's and
# OpenAPI's), generated beside edgesense/v1.
MESSAGE_PACKAGE_DIRS = ("edgesense/sparkplug",)


class ProtocError(RuntimeError):
    """protoc rejected the protos."""


def proto_files(package_dir: str = PACKAGE_DIR) -> list[str]:
    """A package's .proto files, relative to `protos/`, in a stable order."""
    return sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / package_dir).glob("*.proto")
    )


def _include_dirs() -> list[str]:
    grpc_tools_protos = resources.files("grpc_tools") / "_proto"
    # googleapis-common-protos ships google/api/*.proto next to its modules.
    import google.api.annotations_pb2 as annotations

    googleapis_root = Path(annotations.__file__).resolve().parents[2]
    return [str(PROTO_ROOT), str(grpc_tools_protos), str(googleapis_root)]


def _plugins() -> list[str]:
    # mypy-protobuf's plugins sit next to this interpreter; PATH may not have them.
    bin_dir = Path(sys.executable).parent
    plugins = []
    for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        found = shutil.which(name) or shutil.which(name, path=str(bin_dir))
        if found is None:
            raise ProtocError(f"{name} not found: install the test extra (make setup)")
        plugins.append(f"--plugin={name}={found}")
    return plugins


def run_protoc(args: list[str]) -> None:
    argv = ["grpc_tools.protoc", *(f"-I{d}" for d in _include_dirs()), *_plugins(), *args]
    code = protoc.main(argv)
    if code != 0:
        raise ProtocError(f"protoc failed with exit code {code}: {' '.join(args)}")


def _fresh_package(out_dir: Path, package_dir: str) -> Path:
    """`out_dir/package_dir`, emptied but for a new `__init__.py`."""
    target = out_dir / package_dir
    if target.exists():
        for old in target.iterdir():
            if old.name != "__init__.py":
                old.unlink()
    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text(
        f'"""Generated from protos/{package_dir}; do not edit."""\n'
    )
    return target


def generate(out_dir: Path) -> None:
    """Write the generated modules under `out_dir/edgesense/v1/` (and the
    message-only packages beside it)."""
    for package_dir in MESSAGE_PACKAGE_DIRS:
        _fresh_package(out_dir, package_dir)
        run_protoc([f"--python_out={out_dir}", f"--mypy_out={out_dir}", *proto_files(package_dir)])
    target = _fresh_package(out_dir, PACKAGE_DIR)
    run_protoc(
        [
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            *proto_files(),
        ]
    )
    write_descriptor_set(target / "descriptors.binpb")


def write_descriptor_set(path: Path) -> None:
    """A FileDescriptorSet of our protos and their imports (for Envoy)."""
    run_protoc(
        [
            f"--descriptor_set_out={path}",
            "--include_imports",
            "--include_source_info",
            *proto_files(),
        ]
    )


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else REPO_ROOT / "services"
    generate(out)
    generated = [*proto_files(), *(f for d in MESSAGE_PACKAGE_DIRS for f in proto_files(d))]
    print(f"generated {', '.join(generated)} into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
