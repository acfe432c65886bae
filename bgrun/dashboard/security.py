"""The dashboard's locks: the token, the Host check (DNS rebinding), CSRF and headers.

Pure functions, no Flask: the app wires them into its request hooks.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from bgrun.errors import ConfigError

TOKEN_ENV = "BGRUN_DASHBOARD_TOKEN"  # noqa: S105 - a variable name, not a secret
HOSTS_ENV = "BGRUN_DASHBOARD_HOSTS"
MIN_TOKEN_LENGTH = 16
MIN_TOKEN_VARIETY = 8  # distinct characters: 'aaaa…' or 'abab…' is long but guessable
#: Loopback names always served, with any port (an SSH tunnel may change the port).
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - names, not a bind
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::([0-9]{1,5}))?")

#: Sent with every answer. No inline script or style anywhere: the CSP forbids them.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def load_token(environ: Mapping[str, str]) -> tuple[str, bool]:
    """The sign-in token from BGRUN_DASHBOARD_TOKEN, or a fresh one; True if generated."""
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        return secrets.token_urlsafe(32), True
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_LENGTH}"
                          " random characters (or unset it to have one generated)")
    if len(set(token)) < MIN_TOKEN_VARIETY:
        raise ConfigError(f"{TOKEN_ENV} has too little variety: use at least"
                          f" {MIN_TOKEN_VARIETY} different characters, best random ones"
                          " (or unset it to have one generated)")
    return token, False


def allowed_hosts(environ: Mapping[str, str], served_host: str) -> frozenset[str]:
    """Host names the dashboard answers to: loopback, BGRUN_DASHBOARD_HOSTS, the bound host."""
    names = {n.strip().lower() for n in environ.get(HOSTS_ENV, "").split(",")}
    served = served_host.strip().lower()
    if ":" in served and not served.startswith("["):
        served = f"[{served}]"  # an IPv6 address appears bracketed in a Host header
    names.add(served)
    return LOCAL_NAMES | frozenset(names - _WILDCARDS)


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """True if a request's Host header names this dashboard (not a rebound foreign name).

    An entry matches the name with any port; an entry written `name:port` only that port.
    """
    host = host_header.strip().lower()
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    return match.group(1) in allowed or host in allowed


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """False if a browser's Origin header names another site (a cross-site POST).

    No Origin, or `null` (what Chromium sends for our own forms under
    `Referrer-Policy: no-referrer`), tells nothing: the CSRF token decides then.
    """
    if origin is None or origin == "null":
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and host_allowed(netloc, allowed)


def tokens_equal(given: str, expected: str) -> bool:
    """Compare a presented secret with the real one in constant time."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None if there is none."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


def new_csrf_token() -> str:
    """A fresh CSRF token for a new cookie session."""
    return secrets.token_urlsafe(32)
