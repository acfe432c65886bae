"""Opening an SQLite store file: WAL, durability by role, schema, and one lock per process.

Every write is one short `BEGIN IMMEDIATE` transaction: a deferred read-then-write
transaction meets SQLITE_BUSY under contention whatever busy_timeout says.
"""

from __future__ import annotations

import sqlite3
import time
from _thread import allocate_lock  # threading.Lock, without threading's import
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bgrun.errors import NoStoreError, StoreError, StoreGoneError
from bgrun.fileid import FileId, file_id, gone_reason
from bgrun.files import touch_private
from bgrun.store.base import Role
from bgrun.store.schema import migrate, refuse_foreign

OPEN_TIMEOUT = 30.0  # seconds to keep trying a store that other processes are opening

# Durability by role. A caller's commit is fsynced (FULL): once `enqueue` returns an id,
# the job survives a power loss, as SPEC asks. A runner's transitions use NORMAL: in WAL
# mode a commit is then durable at the next checkpoint, so a power loss can undo its last
# transitions (the job is claimed and runs again: at-least-once) but a process crash
# cannot, and a runner spares an fsync per claim and per verdict.
_SYNCHRONOUS = {Role.CALLER: "FULL", Role.RUNNER: "NORMAL"}

Params = Mapping[str, object] | tuple[object, ...]


class Connection:
    """One process's connection to a store file, shared by its threads under a lock."""

    def __init__(self, path: Path, role: Role, *, create: bool = True) -> None:
        """Open the file at `path`; `create=False`: NoStoreError if there is none."""
        self.path = path
        self._name = str(path)  # (a str spares each check the Path's conversion)
        self._lock = allocate_lock()
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            try:
                self._db, self._file = self._connect(_SYNCHRONOUS[role], create)
                return
            except sqlite3.DatabaseError as exc:
                # Switching a new file to WAL, and WAL recovery, can answer "locked" at once,
                # without SQLite's busy handler, while other processes open it too.
                locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if not locked or time.monotonic() > deadline:
                    raise StoreError(f"store {path} is unusable ({exc});"
                                     " it was left as it is") from None
            except OSError as exc:
                raise StoreError(f"store {path} cannot be opened: {exc.strerror or exc}"
                                 ) from None
            time.sleep(0.02)

    def _connect(self, synchronous: str, create: bool) -> tuple[sqlite3.Connection, FileId]:
        if create:
            touch_private(self.path)
        before = file_id(self.path)
        if before is None and not create:
            raise NoStoreError(f"no job store at {self.path}")
        # mode=rw: a reader must never create the file it looks for (a new, empty world).
        where = self.path if create else self.path.as_uri() + "?mode=rw"
        db = sqlite3.connect(where, timeout=30, isolation_level=None,
                             check_same_thread=False, uri=not create)
        try:
            refuse_foreign(db, self.path)  # before WAL, which would rewrite its header
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":  # WAL is a property of the file: set once, by its creator
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(
                    f"store {self.path}: SQLite cannot use WAL there (a network file"
                    " system?): put BGRUN_STORE on a local disk"
                )
            db.execute(f"PRAGMA synchronous={synchronous}")
            migrate(db, self.path)
            opened = file_id(self.path)
            if opened is None or opened != before:
                # Swapped while we opened it: __init__ tries again, as for a locked file.
                raise sqlite3.OperationalError("database is locked (the file was swapped)")
        except BaseException:
            db.close()
            raise
        db.row_factory = sqlite3.Row  # rows are read by column name, never by position
        return db, opened

    def check_file(self) -> None:
        """StoreGoneError if the path no longer names the file this connection has open.

        Called before every read and write (one stat): a store deleted, moved or replaced
        under a long-lived process must not swallow jobs that no other process will ever
        see (bgrun/fileid.py).
        """
        reason = gone_reason(self._name, self._file)
        if reason is not None:
            raise StoreGoneError(f"store {self.path} {reason} while this process had it"
                                 " open; nothing more is read from or written to it")

    def close(self) -> None:
        """Close the connection (the file stays)."""
        self._db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: {exc}") from None
            try:
                self.check_file()  # under the write lock: the narrowest window we have
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise StoreError(f"store {self.path}: {exc}") from None
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a few reads in a row, outside any write transaction."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: {exc}") from None

    def read(self, sql: str, args: Params = ()) -> list[sqlite3.Row]:
        """The rows of one query (one statement: one consistent snapshot)."""
        with self._lock:
            self.check_file()
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"store {self.path}: {exc}") from None
