"""A throwaway PostgreSQL cluster for the tests: Debian's server, started for one session.

`initdb` refuses to run as root, so the cluster belongs to the `postgres` user and every
server command runs under `runuser -u postgres`. It listens on TCP on every address
(network-namespace hosts reach it over veth pairs) with password (SCRAM) authentication,
and on a Unix socket in its own folder with trust for the tests' administration. Each
test gets a fresh database copied from a template that already holds bgrun's schema.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

TEMPLATE = "bgrun_template"
SUPERUSER = "postgres"


def server_binaries() -> Path | None:
    """The bin folder of the newest installed PostgreSQL (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def why_not_here() -> str | None:
    """The one reason the cluster cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "PostgreSQL tests run as root (they start a cluster as the postgres user)"
    if server_binaries() is None:
        return "no PostgreSQL server installed (/usr/lib/postgresql/*/bin/pg_ctl)"
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        return "no 'postgres' system user (the postgresql package makes it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One cluster in a temporary folder of its own; `start()` it, `stop()` it."""

    def __init__(self, prefix: str = "pg-") -> None:
        bins = server_binaries()
        assert bins is not None, why_not_here()
        self.bin = bins
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.data = self.root / "data"
        self.password = secrets.token_hex(12)
        self.port = free_port()
        self._counter = 0
        user = pwd.getpwnam(SUPERUSER)
        os.chmod(self.root, 0o755)
        os.chown(self.root, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._as_postgres(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-sync")
        pwfile.unlink()
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n"
                      "host all all ::/0 scram-sha-256\n")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '*'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\n"
                       "max_connections = 300\n"
                       "log_min_messages = warning\n")

    # -- addresses -------------------------------------------------------------------------

    @property
    def host_port(self) -> tuple[str, int]:
        """Where the server listens on TCP (every address; this is the loopback one)."""
        return "127.0.0.1", self.port

    def url(self, dbname: str, user: str = SUPERUSER, password: str | None = None,
            host: str | None = None, **params: str) -> str:
        """A postgresql:// URL for `dbname` over TCP (the superuser's password by default)."""
        secret = self.password if password is None else password
        where = host or self.host_port[0]
        query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
        return (f"postgresql://{quote(user, safe='')}:{quote(secret, safe='')}@{where}:"
                f"{self.port}/{quote(dbname, safe='')}" + (f"?{query}" if query else ""))

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"),
                          "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`mode`: smart, fast or immediate, as pg_ctl says)."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                          "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the server if it runs, and delete its folder."""
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- administration (over the Unix socket, as the superuser) ---------------------------

    def admin(self, statement: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement in autocommit as the superuser; its rows (empty if none)."""
        import psycopg

        with psycopg.connect(host=str(self.root), port=self.port, user=SUPERUSER,
                             dbname=dbname, autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    def make_template(self) -> None:
        """The template database every test database is copied from: bgrun's schema."""
        self.admin(f"CREATE DATABASE {TEMPLATE}")
        from bgrun.store.pgschema import migrate_url

        migrate_url(self.url(TEMPLATE))
        self.admin(f"ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")

    def new_database(self, template: str | None = TEMPLATE) -> str:
        """A fresh database's name: a copy of the template, or empty (`template=None`)."""
        self._counter += 1
        name = f"t_{os.getpid()}_{self._counter}"
        source = f" TEMPLATE {template}" if template else " TEMPLATE template0"
        self.admin(f"CREATE DATABASE {name}{source}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _as_postgres(self, tool: str, *args: str) -> None:
        result = subprocess.run(["runuser", "-u", SUPERUSER, "--", str(self.bin / tool), *args],
                                capture_output=True, text=True, cwd=self.root, timeout=120)
        if result.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise subprocess.CalledProcessError(result.returncode, [tool, *args],
                                                result.stdout, result.stderr + tail)


@contextlib.contextmanager
def running_server(prefix: str = "pg-") -> Iterator[PgServer]:
    """A started cluster with its template, removed at the end whatever happens."""
    server = PgServer(prefix)
    try:
        for attempt in range(3):  # another process may take the free port meanwhile
            try:
                server.start()
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                server.port = free_port()
                with open(server.data / "postgresql.conf", "a") as conf:
                    conf.write(f"port = {server.port}\n")
        server.make_template()
        yield server
    finally:
        server.remove()
