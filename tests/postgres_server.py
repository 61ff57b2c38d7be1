"""A throwaway PostgreSQL cluster for one test session.

The suite needs a real PostgreSQL and assumes none is running: it runs Debian's server
binaries (``make test`` installs the ``postgresql`` package when they are missing) on a
free loopback port, with the data directory and the Unix socket in a private temporary
folder, and removes both afterwards. ``TEST_POSTGRES_URL`` points the suite at an existing
server instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from marketstream.ports import free_port

DATABASE = "test"
SUPERUSER = "postgres"
INSTALL_HINT = "install Debian's PostgreSQL server (apt-get install postgresql) or set TEST_POSTGRES_URL"


def server_bin_dir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not versions:
        raise RuntimeError(f"PostgreSQL's initdb was not found: {INSTALL_HINT}")
    return Path(versions[-1]).parent


def _server_user() -> str | None:
    """initdb refuses to run as root: as root, run the server as Debian's ``postgres`` user
    (created by the package) or ``nobody``; otherwise as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class ThrowawayPostgres:
    """``start()`` gives a SQLAlchemy URL of database ``test`` (trust auth on loopback);
    ``stop()`` stops the server and deletes its files."""

    def __init__(self) -> None:
        self.bin_dir = server_bin_dir()
        self.user = _server_user()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="marketstream-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str) -> None:
        result = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], user=self.user, cwd=self.root,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): "
                               f"{result.stdout}{result.stderr}{log}".strip())

    def start(self) -> str:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        # Durability is not under test: fsync off makes schema-per-test setups fast.
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self._run("createdb", "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER, DATABASE)
        return self.url

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
