"""The walls between the parts (pyproject.toml, `[tool.importlinter]`) hold, and
each of them would catch a breach.

`make check` runs the same contracts with `lint-imports`; CI runs `make test`,
so this file is what holds them in CI. The contracts see imports in our own
code; `test_pure_module_loads_no_transport_library` also imports each pure
module in a fresh interpreter, which sees what third-party code loads too.
The contracts that list every service, or every part but a few, are held
complete by `test_the_lists_name_every_part`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS: dict[str, dict[str, Any]] = {c["id"]: c for c in CONFIG["contracts"]}
PURE = CONTRACTS["pure-rules"]


def lint_imports(cwd: Path, *args: str, pythonpath: str | None = None) -> tuple[int, str]:
    env = dict(os.environ, COLUMNS="1000")  # contract names on one line each
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_the_import_contracts_hold() -> None:
    code, report = lint_imports(ROOT)
    assert code == 0, report
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in report, report


# Forbidden standard-library modules that the standard library loads itself:
# email.utils (backoff reads Retry-After dates with it) imports socket, and
# asyncio imports socket and ssl. Which code loaded them cannot be seen here,
# so for these two the contract, which sees our own imports, is the check.
LOADED_BY_THE_STANDARD_LIBRARY = {"socket", "ssl"}


def ignored_imports(module: str) -> set[str]:
    """What the pure-rules contract lets `module` import (its ignore_imports)."""
    pairs = (line.split(" -> ") for line in PURE.get("ignore_imports", []))
    return {imported for importer, imported in pairs if importer == module}


@pytest.mark.parametrize("module", PURE["source_modules"])
def test_pure_module_loads_no_transport_library(module: str) -> None:
    """What the module loads at run time, third-party imports included: nothing
    the contract forbids, but what it lets this module import and what the
    standard library loads itself. So claim/lanes.py, for one, loads no asyncio."""
    forbidden = set(PURE["forbidden_modules"]) - LOADED_BY_THE_STANDARD_LIBRARY
    forbidden -= ignored_imports(module)
    assert {"grpc", "sqlite3", "asyncio"} - ignored_imports(module) <= forbidden
    probe = (
        f"import json, sys, {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert loaded & forbidden == set(), f"importing {module} loads these"


EDGESENSE = ROOT / "services" / "edgesense"
# Shared by the services rather than one of them (v1 and sparkplug: the
# generated protos).
GENERATED = {"edgesense.v1", "edgesense.sparkplug"}
SHARED = {"edgesense.common", "edgesense.storage", *GENERATED}
# The composition root: what puts the services together.
COMPOSITION_ROOT = {
    "edgesense.cli",
    "edgesense.up",
    "edgesense.up_child",
    "edgesense.embedded_broker",
}


def lists_from_the_parts(package: Path) -> dict[tuple[str, str], set[str]]:
    """(contract, key) -> what that list must hold, worked out from the parts
    of edgesense (the folder `package`): the contracts that name every service,
    or every part but common and v1, as a list."""
    modules = {f"edgesense.{p.stem}" for p in package.glob("*.py") if p.name != "__init__.py"}
    packages = {f"edgesense.{p.parent.name}" for p in package.glob("*/__init__.py")}
    services = (packages - SHARED) | {"edgesense_bridge"}
    all_but_common_and_generated = (modules | packages) - {"edgesense.common", *GENERATED}
    return {
        ("services-apart", "modules"): services,
        ("services-below-root", "source_modules"): services,
        ("storage-below-services", "forbidden_modules"): services | COMPOSITION_ROOT,
        ("bridge-standalone", "forbidden_modules"): all_but_common_and_generated,
        ("common-neutral", "forbidden_modules"): all_but_common_and_generated
        | {"edgesense_bridge"},
    }


@pytest.mark.parametrize(("contract", "key"), sorted(lists_from_the_parts(EDGESENSE)))
def test_the_lists_name_every_part(contract: str, key: str) -> None:
    """These contracts name every service, or say "only common and v1" as a
    list of everything else: a part added to edgesense must be added to them,
    or this fails."""
    assert set(CONTRACTS[contract][key]) == lists_from_the_parts(EDGESENSE)[contract, key]


def test_a_new_part_is_missing_from_every_list(tmp_path: Path) -> None:
    """A package added to (a copy of) edgesense and to no contract is what the
    test above finds missing from each list."""
    copy = tmp_path / "edgesense"
    shutil.copytree(EDGESENSE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (copy / "billing").mkdir()
    (copy / "billing" / "__init__.py").write_text("")
    for (contract, key), wanted in lists_from_the_parts(copy).items():
        assert wanted - set(CONTRACTS[contract][key]) == {"edgesense.billing"}, contract


# One breach per contract: (file under the copy's roots, line appended to it).
BREACHES = {
    "pure-rules": ("edgesense/common/backoff.py", "import grpc"),
    "services-apart": ("edgesense/api/breach.py", "from edgesense.registry import validation"),
    "services-below-root": ("edgesense/delivery/breach.py", "import edgesense.cli"),
    "common-neutral": ("edgesense/common/breach.py", "import edgesense.delivery.record.policy"),
    "storage-shared-by-two": ("edgesense_bridge/breach.py", "import edgesense.storage.engine"),
    "storage-below-services": ("edgesense/storage/breach.py", "import edgesense.registry.store"),
    "bridge-standalone": ("edgesense_bridge/breach.py", "import edgesense.envoygen"),
}


def test_every_contract_has_a_breach() -> None:
    assert set(BREACHES) == set(CONTRACTS)


@pytest.mark.parametrize("contract", sorted(BREACHES))
def test_a_breach_breaks_the_contract(tmp_path: Path, contract: str) -> None:
    """The contract, run on a copy of the code with one forbidden import added,
    is reported broken and names the import."""
    roots = {"edgesense": ROOT / "services", "edgesense_bridge": ROOT / "gateway-bridge"}
    for package, parent in roots.items():
        shutil.copytree(
            parent / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path, line = BREACHES[contract]
    target = tmp_path / path
    before = target.read_text() if target.exists() else ""
    target.write_text(before + f"\n{line}\n")
    breaching = path.removesuffix(".py").replace("/", ".")

    code, report = lint_imports(tmp_path, "--contract", contract, pythonpath=str(tmp_path))
    assert code != 0, report
    assert f"{CONTRACTS[contract]['name']} BROKEN" in report, report
    assert f"{breaching} " in report, report
