"""Connecting to a PostgreSQL store: timeouts, keepalives, reconnects, one-line errors.

A runner must learn within its lease that its server is gone (a network cut leaves a
TCP connection silently open for hours under the kernel's defaults), so every session
has libpq keepalives and a `tcp_user_timeout` well under the lease. A broken connection
makes the call that met it raise StoreError; the next call connects again, so a runner
outlives a server restart. Every error is one line that names the store by its URL
without the password (describe_url).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from bgrun.errors import StoreError
from bgrun.store.factory import describe_url

__all__ = ["Listener", "Session", "describe_url", "session_params"]

CONNECT_TIMEOUT = 10  # seconds, unless the URL sets connect_timeout

Conn = psycopg.Connection[DictRow]
T = TypeVar("T")


def session_params(url: str, lease: float) -> dict[str, Any]:
    """libpq parameters for `url`: the URL's own win over these defaults."""
    params: dict[str, Any] = dict(conninfo_to_dict(url))
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "bgrun",
        # A dead peer is noticed within a third of the lease: probes after idle seconds,
        # and unacknowledged data (a black hole mid-query) fails the socket.
        "keepalives": 1,
        "keepalives_idle": max(1, int(lease / 5)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": max(1000, int(lease * 1000 / 3)),
    }
    for key, value in defaults.items():
        params.setdefault(key, value)
    return params


def server_settings(lease: float) -> dict[str, str]:
    """The server side of a session, so that a host cut off mid-transaction does not hold
    its row and advisory locks for the kernel's two hours: the server probes the client
    as the client probes it, and ends a transaction left idle a third of a lease. Every
    commit is durable before it is acknowledged, for every role."""
    third = max(1000, int(lease * 1000 / 3))
    return {"tcp_keepalives_idle": str(max(1, int(lease / 5))),
            "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3",
            "tcp_user_timeout": str(third),
            "idle_in_transaction_session_timeout": str(third),
            # whatever the server's default: a commit lost to a server crash could be a
            # verdict (a running job under a live runner) or a claim (a job run twice)
            "synchronous_commit": "on"}


_SET = "SELECT " + ", ".join(f"set_config(%({name})s, %(value_{name})s, false)"
                             for name in server_settings(15.0))


def connect(url: str, lease: float, where: str) -> Conn:
    """An autocommit session to the store; StoreError saying why not, in one line."""
    params = session_params(url, lease)
    settings = server_settings(lease)
    args = {**{n: n for n in settings}, **{f"value_{n}": v for n, v in settings.items()}}
    try:
        conn = psycopg.connect(autocommit=True, row_factory=dict_row, **params)
    except psycopg.Error as exc:
        raise connect_error(exc, where, params.get("password")) from None
    try:
        conn.execute(_SET, args)  # (SET, not startup options: a pooler may refuse those)
    except psycopg.Error as exc:
        conn.close()
        raise use_error(exc, where, params.get("password")) from None
    return conn


def connect_error(exc: psycopg.Error, where: str, password: object = None) -> StoreError:
    """The one-line StoreError for a failed connection: unreachable, or refused and why."""
    text = _scrubbed(exc, password, first_line=True)  # (libpq's second line is a hint)
    fatal = re.search(r"FATAL:\s+(.*)", text)
    if fatal is None:
        reason = text.rsplit(" failed: ", 1)[-1]
        return StoreError(f"store {where} is unreachable: {reason}")
    said = fatal.group(1)
    if "password authentication failed" in said or "authentication failed" in said:
        return StoreError(f"store {where}: authentication failed ({said})")
    if "does not exist" in said and "database" in said:
        return StoreError(f"store {where}: no such database on that server ({said})")
    return StoreError(f"store {where}: the server refused the connection ({said})")


def use_error(exc: psycopg.Error, where: str, password: object = None, lost: bool = False
              ) -> StoreError:
    """The one-line StoreError for a statement that failed on an open session (`lost`:
    the session is broken)."""
    text = _scrubbed(exc, password)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StoreError(f"store {where}: permission denied ({text})")
    if lost or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreError(f"store {where}: connection lost ({text})")
    return StoreError(f"store {where}: {text}")


def _scrubbed(exc: BaseException, password: object, first_line: bool = False) -> str:
    """The error's text on one line, without the password should libpq ever echo it."""
    said = str(exc).strip()
    if first_line:
        said = said.split("\n", 1)[0]
    text = " ".join(said.split()) or type(exc).__name__
    if isinstance(password, str) and password:
        text = text.replace(password, "***")
    return text


class Session:
    """One process's session to the store, shared by its threads under a lock.

    Opened at once (errors then are the caller's: StoreError), and again lazily after
    a call found it broken.
    """

    def __init__(self, url: str, lease: float, where: str) -> None:
        self.where = where
        self._url, self._lease = url, lease
        self._password = session_params(url, lease).get("password")
        self._lock = threading.Lock()
        self._conn: Conn | None = connect(url, lease, where)

    @property
    def conn(self) -> Conn:
        """The open session (connecting again if the last one broke); call under lock."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, self._lease, self.where)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def write(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._lock, self._failing():
            conn = self.conn
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    def call(self, use: Callable[[Conn], T]) -> T:
        """`use(session)`, under the lock, its psycopg errors made StoreError."""
        with self._lock, self._failing():
            return use(self.conn)

    def read(self, statement: str, args: dict[str, Any] | None = None) -> list[DictRow]:
        """The rows of one query (one statement: one snapshot)."""
        with self._lock, self._failing():
            return self.conn.execute(statement, args).fetchall()

    def run(self, statement: str, args: dict[str, Any] | None = None
            ) -> tuple[list[DictRow], int]:
        """One statement as a transaction of its own (one round trip, no BEGIN/COMMIT):
        its rows (empty when it returns none) and how many rows it changed."""
        with self._lock, self._failing():
            cur = self.conn.execute(statement, args)
            return (cur.fetchall() if cur.description else []), cur.rowcount

    @contextmanager
    def _failing(self) -> Iterator[None]:
        """psycopg errors as StoreError; a broken session is dropped for the next call."""
        try:
            yield
        except psycopg.Error as exc:
            lost = self._conn is not None and self._conn.broken
            if lost and self._conn is not None:
                self._conn.close()
                self._conn = None
            if isinstance(exc, psycopg.errors.UniqueViolation):
                raise  # the caller's to judge (a racing claim, a retry meeting a live key)
            raise use_error(exc, self.where, self._password, lost) from None


class Listener:
    """A session of its own that LISTENs on one channel (opened at the first wait)."""

    def __init__(self, url: str, lease: float, where: str, channel: str) -> None:
        self._url, self._lease, self._where, self._channel = url, lease, where, channel
        self._conn: Conn | None = None

    def wait(self, timeout: float) -> bool:
        """True when a notification came within `timeout` (or the session is new: what
        happened while none listened is unknown); every pending one is consumed."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._url, self._lease, self._where)
                self._conn.execute(f"LISTEN {self._channel}")
                return True
            came = any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))
            if came:
                for _ in self._conn.notifies(timeout=0.001):
                    pass
            return came
        except psycopg.Error as exc:
            self.close()
            raise use_error(exc, self._where, lost=True) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
