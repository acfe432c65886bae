"""Server-side sessions and the sign-in throttle: state in this process, never in a cookie.

A browser that signs in gets a random session id and nothing else: its cookie carries no
flag, no CSRF token and no signature to study, and a browser sends it to every server on
the same host name whatever the port, so what it is worth must be decided here. A
session ends for good when its owner signs out, after IDLE seconds without a request,
LIFETIME seconds after sign-in, or when the dashboard stops. It is bound to the `Host`
(name and port) it was made on. Pure Python, no Flask: the app wires it in.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple

from bgrun.errors import ConfigError

COOKIE = "bgrun_session"
IDLE_ENV = "BGRUN_DASHBOARD_IDLE"
LIFETIME_ENV = "BGRUN_DASHBOARD_LIFETIME"
IDLE = 30 * 60.0  # seconds without a request that end a session
LIFETIME = 12 * 3600.0  # seconds after sign-in that end it, however busy
MAX_SESSIONS = 256  # signed-in browsers kept at once; the least recently used go first
_MAX_ID = 100  # longer cookie values are not ours: not even hashed

Clock = Callable[[], float]


class Session(NamedTuple):
    """One signed-in browser: its CSRF token, the Host it signed in on, and its times."""

    csrf: str
    host: str
    created: float
    seen: float


class Sessions:
    """The signed-in browsers of one dashboard process, keyed by a hash of their id.

    Thread-safe (waitress serves from several threads). Only hashes are kept, so the
    table never holds a usable id, and a look-up's timing tells nothing about one.
    """

    def __init__(self, idle: float = IDLE, lifetime: float = LIFETIME,
                 limit: int = MAX_SESSIONS, clock: Clock = time.monotonic) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.limit = limit
        self._clock = clock
        self._table: OrderedDict[bytes, Session] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, host: str) -> tuple[str, Session]:
        """A new session bound to `host`: (the id for the cookie, the session)."""
        sid = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), host.lower(), now, now)
        with self._lock:
            self._table[_key(sid)] = session
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
        return sid, session

    def find(self, sid: str | None, host: str) -> Session | None:
        """The live session of `sid` when used on `host`, or None; a found one is touched."""
        if not sid or len(sid) > _MAX_ID:
            return None
        key = _key(sid)
        now = self._clock()
        with self._lock:
            session = self._table.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.created > self.lifetime:
                del self._table[key]
                return None
            if session.host != host.lower():
                return None  # another name or port: not where this session was made
            session = session._replace(seen=now)
            self._table[key] = session
            self._table.move_to_end(key)
            return session

    def end(self, sid: str | None) -> None:
        """End the session of `sid` for good (signing out); nothing if there is none."""
        if sid and len(sid) <= _MAX_ID:
            with self._lock:
                self._table.pop(_key(sid), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)


def _key(sid: str) -> bytes:
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).digest()


def from_environ(environ: Mapping[str, str]) -> Sessions:
    """Sessions with the idle and absolute limits of BGRUN_DASHBOARD_IDLE / _LIFETIME."""
    return Sessions(_seconds(environ, IDLE_ENV, IDLE), _seconds(environ, LIFETIME_ENV, LIFETIME))


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 366 * 86400:  # also refuses nan and inf
        raise ConfigError(f"{name} must be a number of seconds above 0, not {raw[:40]!r}")
    return value


class Throttle:
    """Per-client back-off after wrong tokens, at sign-in and in bearer headers alike.

    FREE wrong tokens cost nothing (typos); each one after that makes the client wait
    twice as long before its next try, from BASE up to MOST seconds. While it waits,
    every token it sends is refused unread (429), right or wrong, so waiting cannot be
    skipped by guessing. A right token forgets the client's failures.
    """

    FREE = 5
    BASE = 0.5
    MOST = 30.0
    LIMIT = 4096  # clients remembered; the least recent are forgotten first

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds before `client` may try a token again (0: now)."""
        with self._lock:
            _, until = self._failures.get(client, (0, 0.0))
        return max(0.0, until - self._clock())

    def failed(self, client: str) -> None:
        """Count a wrong token from `client`."""
        with self._lock:
            count = self._failures.pop(client, (0, 0.0))[0] + 1
            delay = 0.0 if count <= self.FREE else min(
                self.BASE * 2 ** min(count - self.FREE - 1, 30), self.MOST)
            self._failures[client] = (count, self._clock() + delay)
            while len(self._failures) > self.LIMIT:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget `client`'s failures: it knows the token."""
        with self._lock:
            self._failures.pop(client, None)
