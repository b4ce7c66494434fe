"""A private PostgreSQL server for tests that restart it (the chaos test; the
bench could use it too), never the machine's own cluster, which others share.

`PrivatePostgres` runs `initdb` and `pg_ctl` of the newest server under
/usr/lib/postgresql/<version>/bin (Debian's layout) into a temporary folder:
data directory and unix socket there, TCP on a free port of 127.0.0.1, trust
authentication, `fsync` on (what a committed transaction rests on in
production). PostgreSQL refuses to run as root, so as root the
binaries run as the `postgres` user and the folder is made theirs; it lives
in the system temporary folder, not under pytest's, which root keeps private.

`restart("fast")` is `pg_ctl restart -m fast`: sessions are told to end, a
checkpoint is written, the server is back within a second. `stop("immediate")`
then `start()` is a crash as clients see it: every backend is killed at
once, no checkpoint, and the next start replays the write-ahead log.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

INSTALLED = Path("/usr/lib/postgresql")
OS_USER = "postgres"
ROLE = "postgres"
PG_CTL_SECONDS = 60


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (Debian's layout), or None."""
    versions = sorted(
        (p for p in INSTALLED.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


@dataclass
class PrivatePostgres:
    """One PostgreSQL server of our own; `start()` creates it, `remove()` deletes it."""

    port: int = field(default_factory=free_port)
    bin_dir: Path | None = field(default_factory=postgres_bin)
    root: Path | None = None  # the temporary folder: data/, the socket, server.log

    @property
    def data(self) -> Path:
        assert self.root is not None, "not created"
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not created"
        return self.root / "server.log"

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{ROLE}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it accepts."""
        if self.root is None:
            self._create()
        self._pg_ctl("start", "-l", str(self.log_path), "-o", self._server_options())

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m mode` (smart, fast or immediate), waiting until it is down."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m mode`: stop, then start with the same options."""
        self._pg_ctl("restart", "-m", mode, "-l", str(self.log_path), "-o", self._server_options())

    def running(self) -> bool:
        if self.root is None:
            return False
        status = self._run([self._tool("pg_ctl"), "status", "-D", str(self.data)], check=False)
        return status.returncode == 0

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; answers its SQLAlchemy (asyncpg) URL."""
        self._run(
            [self._tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, name]
        )
        return self.url(name)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def remove(self, keep_log_in: Path | None = None) -> None:
        """Stop the server (immediately: nothing in it is kept) and delete its
        folder, its log copied into `keep_log_in` first if given."""
        if self.root is None:
            return
        try:
            if self.running():
                self.stop("immediate")
        except Exception:
            self._kill_postmaster()  # pg_ctl failed: never leave a server behind
            raise
        finally:
            if keep_log_in is not None and self.log_path.exists():
                shutil.copy(self.log_path, keep_log_in / f"postgres-{self.port}.log")
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _kill_postmaster(self) -> None:
        """SIGKILL the server whose pid its data folder names, if any."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def _create(self) -> None:
        if self.bin_dir is None:
            raise FileNotFoundError(f"no PostgreSQL server under {INSTALLED}/*/bin")
        root = Path(tempfile.mkdtemp(prefix="edgesense-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OS_USER)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        self.root = root
        # --no-sync only skips initdb's own flush of the new files (nothing in
        # them is ours yet); the server runs with fsync on.
        self._run(
            [
                self._tool("initdb"),
                "-D",
                str(self.data),
                "-U",
                ROLE,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )

    def _server_options(self) -> str:
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=on -c synchronous_commit=on"
        )

    def _pg_ctl(self, *arguments: str) -> None:
        self._run(
            [
                self._tool("pg_ctl"),
                *arguments,
                "-D",
                str(self.data),
                "-w",
                "-t",
                str(PG_CTL_SECONDS),
            ]
        )

    def _tool(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool, as the postgres user when we are root."""
        if os.geteuid() == 0:
            argv = ["runuser", "-u", OS_USER, "--", *argv]
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PG_CTL_SECONDS + 10,
            cwd=self.root or "/",
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}\n"
                f"server log:\n{self.log()[-4000:]}"
            )
        return done
